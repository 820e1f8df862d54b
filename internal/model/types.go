// Package model holds kproxy's view of Services and endpoints: the backend-neutral
// facts that every proxy mode programs into the kernel, and the tracker that records
// what changed since the last sync.
package model

import (
	"fmt"
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Family is an IP family; backends program one family at a time.
type Family int

// The IP families, numbered as in the IP header's version field.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// FamilyOf returns the family of an address.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() || a.Is4In6() {
		return IPv4
	}
	return IPv6
}

// ServicePortName identifies one port of one Service; it is the unit every backend
// programs (one KUBE-SVC-* chain per ServicePortName in iptables mode).
type ServicePortName struct {
	types.NamespacedName
	Port     string // the port's name, "" for an unnamed port
	Protocol v1.Protocol
}

// String is upstream's "ns/name:port" form ("ns/name" for an unnamed port), used in
// rule comments and chain-name hashes.
func (n ServicePortName) String() string {
	if n.Port == "" {
		return n.Namespace + "/" + n.Name
	}
	return fmt.Sprintf("%s/%s:%s", n.Namespace, n.Name, n.Port)
}

// ServicePort is one port of a Service with everything a backend needs to program it.
// Addresses of both families may be present; backends use the ones of their family.
type ServicePort struct {
	Name ServicePortName
	// ClusterIPs holds at most one address per family.
	ClusterIPs []netip.Addr
	Port       int32
	Protocol   v1.Protocol
	// NodePort is 0 when the port has none.
	NodePort int32
	// ExternalIPs are spec.externalIPs; LoadBalancerIPs are the status ingress IPs whose
	// ipMode is VIP (or unset): ipMode Proxy addresses are not programmed, like upstream.
	ExternalIPs              []netip.Addr
	LoadBalancerIPs          []netip.Addr
	LoadBalancerSourceRanges []netip.Prefix
	// StickyMaxAgeSeconds > 0 means sessionAffinity ClientIP with that timeout.
	StickyMaxAgeSeconds int
	ExternalPolicyLocal bool // externalTrafficPolicy: Local
	InternalPolicyLocal bool // internalTrafficPolicy: Local
	HealthCheckNodePort int32
	// TrafficDistribution is spec.trafficDistribution ("" when unset).
	TrafficDistribution string
}

// ClusterIP returns the port's ClusterIP of the given family, if it has one.
func (p *ServicePort) ClusterIP(f Family) (netip.Addr, bool) {
	for _, ip := range p.ClusterIPs {
		if FamilyOf(ip) == f {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// ExternallyAccessible is true when traffic from outside the cluster can reach the port
// (NodePort, externalIPs or LoadBalancer IPs); it then uses externalTrafficPolicy.
func (p *ServicePort) ExternallyAccessible() bool {
	return p.NodePort != 0 || len(p.ExternalIPs) > 0 || len(p.LoadBalancerIPs) > 0
}

// ProtocolLower is the protocol in lower case, as iptables and nft spell it.
func (p *ServicePort) ProtocolLower() string { return strings.ToLower(string(p.Protocol)) }

// Endpoint is one backend address of a ServicePort.
type Endpoint struct {
	IP          netip.Addr
	Port        int32
	NodeName    string
	Zone        string
	Ready       bool
	Serving     bool
	Terminating bool
	// IsLocal is true when the endpoint runs on this node (nodeName matches).
	IsLocal bool
	// ZoneHints and NodeHints are the EndpointSlice hints (forZones, forNodes).
	ZoneHints []string
	NodeHints []string
}

// AddrPort is the endpoint as "IP:port" ("[IP]:port" for IPv6).
func (e *Endpoint) AddrPort() netip.AddrPort { return netip.AddrPortFrom(e.IP, uint16(e.Port)) }

// String is the endpoint's "IP:port" form, the sort key and hash input upstream uses.
func (e *Endpoint) String() string { return e.AddrPort().String() }

// Node holds what the proxy needs to know about the node it runs on.
type Node struct {
	Name      string
	Addresses []netip.Addr
	PodCIDRs  []netip.Prefix
	Labels    map[string]string
}

// Zone is the node's topology.kubernetes.io/zone label.
func (n *Node) Zone() string {
	if n == nil {
		return ""
	}
	return n.Labels[v1.LabelTopologyZone]
}
