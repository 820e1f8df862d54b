package nftables

import (
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/kproxy/kproxy/internal/model"
)

// baseChain is a chain hooked into netfilter.
type baseChain struct {
	name     string
	typ      knftables.BaseChainType
	hook     knftables.BaseChainHook
	priority knftables.BaseChainPriority
}

// baseChains are upstream's: filtering before DNAT for loadBalancerSourceRanges, the
// endpoint checks after it, DNAT in prerouting/output and masquerade in postrouting.
var baseChains = []baseChain{
	{chainFilterPreroutingPreDNAT, knftables.FilterType, knftables.PreroutingHook, knftables.DNATPriority + "-10"},
	{chainFilterOutputPreDNAT, knftables.FilterType, knftables.OutputHook, knftables.DNATPriority + "-10"},
	{chainFilterInput, knftables.FilterType, knftables.InputHook, knftables.FilterPriority},
	{chainFilterForward, knftables.FilterType, knftables.ForwardHook, knftables.FilterPriority},
	{chainFilterOutput, knftables.FilterType, knftables.OutputHook, knftables.FilterPriority},
	{chainNATPrerouting, knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority},
	{chainNATOutput, knftables.NATType, knftables.OutputHook, knftables.DNATPriority},
	{chainNATPostrouting, knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority},
}

// container is a set or map every sync keeps.
type container struct {
	name    string
	isMap   bool
	typ     string // "%a" stands for the family's address type
	comment string
}

var containers = []container{
	{setClusterIPs, false, "%a", "Active ClusterIPs"},
	{setNodePortIPs, false, "%a", "IPs that accept NodePort traffic"},
	{setHairpinConnections, false, "%a . %a . inet_proto . inet_service", "service hairpin connections"},
	{mapServiceIPs, true, "%a . inet_proto . inet_service : verdict", "ClusterIP, ExternalIP and LoadBalancer IP traffic"},
	{mapServiceNodePorts, true, "inet_proto . inet_service : verdict", "NodePort traffic"},
	{mapNoEndpointServices, true, "%a . inet_proto . inet_service : verdict", "vmap to drop or reject packets to services with no endpoints"},
	{mapNoEndpointNodePorts, true, "inet_proto . inet_service : verdict", "vmap to drop or reject packets to service nodeports with no endpoints"},
	{mapFirewallIPs, true, "%a . inet_proto . inet_service : verdict", "destinations that are subject to LoadBalancerSourceRanges"},
}

func (c *container) object(p *Params) knftables.Object {
	typ := strings.ReplaceAll(c.typ, "%a", p.addrType())
	if c.isMap {
		return &knftables.Map{Name: c.name, Type: typ, Comment: knftables.PtrTo(c.comment)}
	}
	return &knftables.Set{Name: c.name, Type: typ, Comment: knftables.PtrTo(c.comment)}
}

// fixedChains computes the regular chains every sync keeps and their rules, which only
// depend on Params.
func fixedChains(p *Params) []*chain {
	ip := p.ipKeyword()
	mark := p.masqMark()
	jumps := func(name string, targets ...string) *chain {
		c := &chain{name: name}
		for _, t := range targets {
			if strings.HasPrefix(name, "nat-") {
				c.add("", "jump", t)
			} else {
				c.add("", "ct state new jump", t)
			}
		}
		return c
	}
	out := []*chain{
		jumps(chainFilterPreroutingPreDNAT, chainFirewallCheck),
		jumps(chainFilterOutputPreDNAT, chainFirewallCheck),
		jumps(chainFilterInput, chainNodePortEndpointsCheck, chainServiceEndpointsCheck),
		jumps(chainFilterForward, chainServiceEndpointsCheck, chainClusterIPsCheck),
		jumps(chainFilterOutput, chainServiceEndpointsCheck, chainClusterIPsCheck),
		jumps(chainNATPrerouting, chainServices),
		jumps(chainNATOutput, chainServices),
		jumps(chainNATPostrouting, chainMasquerading),
	}

	check := &chain{name: chainClusterIPsCheck}
	check.add("Reject traffic to invalid ports of ClusterIPs", ip, "daddr @"+setClusterIPs, "reject")
	if cidrs := model.PrefixesOf(p.ServiceCIDRs, p.Family); len(cidrs) > 0 {
		s := make([]string, len(cidrs))
		for i, c := range cidrs {
			s[i] = c.String()
		}
		check.add("Drop traffic to unallocated ClusterIPs", ip, "daddr {", strings.Join(s, ", "), "} drop")
	}

	fw := &chain{name: chainFirewallCheck}
	fw.add("", ip, "daddr . meta l4proto . th dport vmap @"+mapFirewallIPs)

	masq := &chain{name: chainMasquerading}
	masq.add("", "mark and", mark, "!= 0 mark set mark xor", mark, "masquerade fully-random")
	masq.add("", "ct status dnat", ip, "saddr .", ip, "daddr . meta l4proto . th dport @"+setHairpinConnections, "masquerade fully-random")

	// NodePorts answer on the nodeport-ips, or on every local address but loopback
	// (nft has no route_localnet equivalent of iptables' localhost NodePorts).
	noLocalhost := ip + " daddr != 127.0.0.0/8"
	if p.Family == model.IPv6 {
		noLocalhost = ip + " daddr != ::1"
	}
	npCheck := &chain{name: chainNodePortEndpointsCheck}
	svcs := &chain{name: chainServices}
	if p.MasqueradeAll {
		svcs.add("masquerade all clusterIP traffic", ip, "daddr @"+setClusterIPs, "mark set mark or", mark)
	} else if p.LocalDetector.Implemented() {
		svcs.add("masquerade clusterIP traffic from outside cluster", ip, "daddr @"+setClusterIPs, p.LocalDetector.ifNotLocal, "mark set mark or", mark)
	}
	svcs.add("", ip, "daddr . meta l4proto . th dport vmap @"+mapServiceIPs)
	if p.NodePortAll {
		svcs.add("", "fib daddr type local", noLocalhost, "meta l4proto . th dport vmap @"+mapServiceNodePorts)
		npCheck.add("", noLocalhost, "meta l4proto . th dport vmap @"+mapNoEndpointNodePorts)
	} else {
		svcs.add("", ip, "daddr @"+setNodePortIPs, "meta l4proto . th dport vmap @"+mapServiceNodePorts)
		npCheck.add("", ip, "daddr @"+setNodePortIPs, "meta l4proto . th dport vmap @"+mapNoEndpointNodePorts)
	}

	svcCheck := &chain{name: chainServiceEndpointsCheck}
	svcCheck.add("", ip, "daddr . meta l4proto . th dport vmap @"+mapNoEndpointServices)

	reject := &chain{name: chainReject, comment: "helper for @no-endpoint-services / @no-endpoint-nodeports"}
	reject.add("", "reject")

	return append(out, check, fw, masq, npCheck, reject, svcCheck, svcs)
}

// nodePortElements are the nodeport-ips elements: the node's NodePort addresses of the
// family, without loopback ones (unused when NodePorts answer on every address).
func nodePortElements(p *Params) []element {
	if p.NodePortAll {
		return nil
	}
	var out []element
	for _, a := range model.AddrsOf(p.NodePortIPs, p.Family) {
		if !a.IsLoopback() {
			out = append(out, element{container: setNodePortIPs, key: []string{a.String()}})
		}
	}
	return out
}
