// Package ipvs is kproxy's IPVS backend (--proxy-mode ipvs). Like upstream
// kube-proxy's IPVS mode it programs one IPVS virtual server per Service address and
// port (ClusterIP, externalIP, LoadBalancer IP, NodePort on each node address), binds
// the Service addresses to the dummy interface kube-ipvs0 so the kernel accepts them
// as local, and keeps masquerading, NodePorts and source ranges in a few fixed
// iptables rules that match ipsets. The work is split in a pure planner (plan.go,
// ipsets.go, rules.go: Snapshot in, desired state out) and an applier behind small
// interfaces (kernel.go), so the planner and the reconciler are tested without root.
package ipvs

import (
	"strings"

	"github.com/kproxy/kproxy/internal/model"
)

// DummyInterface holds every Service address, as upstream names it.
const DummyInterface = "kube-ipvs0"

// Chains, as upstream's IPVS mode names them.
const (
	chainServices             = "KUBE-SERVICES"
	chainPostrouting          = "KUBE-POSTROUTING"
	chainMarkMasq             = "KUBE-MARK-MASQ"
	chainNodePort             = "KUBE-NODE-PORT"
	chainLoadBalancer         = "KUBE-LOAD-BALANCER"
	chainForward              = "KUBE-FORWARD"
	chainProxyFirewall        = "KUBE-PROXY-FIREWALL"
	chainSourceRangesFirewall = "KUBE-SOURCE-RANGES-FIREWALL"
	chainIPVSFilter           = "KUBE-IPVS-FILTER"
	chainIPVSOutFilter        = "KUBE-IPVS-OUT-FILTER"
	chainCanary               = "KUBE-PROXY-CANARY"
)

// natChains and filterChains are the chains this backend owns in each table.
var (
	natChains    = []string{chainServices, chainPostrouting, chainNodePort, chainLoadBalancer, chainMarkMasq}
	filterChains = []string{chainForward, chainNodePort, chainProxyFirewall, chainSourceRangesFirewall, chainIPVSFilter, chainIPVSOutFilter}
)

// Base names of the ipsets (IPv4 spelling; see setName for IPv6).
const (
	setLoopBack            = "KUBE-LOOP-BACK"
	setClusterIP           = "KUBE-CLUSTER-IP"
	setExternalIP          = "KUBE-EXTERNAL-IP"
	setExternalIPLocal     = "KUBE-EXTERNAL-IP-LOCAL"
	setLoadBalancer        = "KUBE-LOAD-BALANCER"
	setLoadBalancerFW      = "KUBE-LOAD-BALANCER-FW"
	setLoadBalancerLocal   = "KUBE-LOAD-BALANCER-LOCAL"
	setLBSourceIP          = "KUBE-LOAD-BALANCER-SOURCE-IP"
	setLBSourceCIDR        = "KUBE-LOAD-BALANCER-SOURCE-CIDR"
	setNodePortTCP         = "KUBE-NODE-PORT-TCP"
	setNodePortLocalTCP    = "KUBE-NODE-PORT-LOCAL-TCP"
	setNodePortUDP         = "KUBE-NODE-PORT-UDP"
	setNodePortLocalUDP    = "KUBE-NODE-PORT-LOCAL-UDP"
	setNodePortSCTP        = "KUBE-NODE-PORT-SCTP-HASH"
	setNodePortLocalSCTP   = "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
	setHealthCheckNodePort = "KUBE-HEALTH-CHECK-NODE-PORT"
	setIPVSIPs             = "KUBE-IPVS-IPS"
)

// setName is the family's name of a set: IPv6 sets are "KUBE-6-...", like upstream.
// Names longer than ipset's 31 characters are shortened at the end.
func setName(f model.Family, base string) string {
	if f != model.IPv6 {
		return base
	}
	n := "KUBE-6-" + strings.TrimPrefix(base, "KUBE-")
	if len(n) > 31 {
		n = n[:31]
	}
	return n
}
