package model

import "net/netip"

// PortPlan holds the decisions every backend makes the same way for one ServicePort in
// one IP family, following upstream kube-proxy: which endpoints each kind of traffic
// uses, and what happens to traffic that finds none. Backends only translate it into
// their own rules.
type PortPlan struct {
	Sets EndpointSets
	// ClusterChain and LocalChain say whether the port needs a chain (or map) of
	// Cluster-policy and of Local-policy endpoints.
	ClusterChain, LocalChain bool
	// HasEndpoints is false when no endpoint is usable at all: traffic is rejected.
	HasEndpoints bool
	// HasInternal / HasExternal say whether ClusterIP / external traffic has endpoints
	// under its policy; when not (and HasEndpoints), that traffic is dropped.
	HasInternal, HasExternal bool
	// InternalLocal / ExternalLocal say that traffic uses the Local-policy endpoints.
	InternalLocal, ExternalLocal bool
	// The port's addresses of the family.
	ClusterIP    netip.Addr
	ExternalIPs  []netip.Addr
	LBIPs        []netip.Addr
	SourceRanges []netip.Prefix
	// ExternallyReachable is true with a NodePort, externalIPs or LB IPs in the family;
	// ExternalChain says the port needs its "external destinations" chain.
	ExternallyReachable bool
	ExternalChain       bool
	// Firewalled is true when loadBalancerSourceRanges restrict the LB IPs (a range
	// list that admits every address restricts nothing).
	Firewalled bool
}

// PlanPort plans one ServicePort for family f from its endpoints (of any family).
func PlanPort(sp *ServicePort, eps []*Endpoint, node *Node, f Family) PortPlan {
	p := PortPlan{
		ExternalIPs:   AddrsOf(sp.ExternalIPs, f),
		LBIPs:         AddrsOf(sp.LoadBalancerIPs, f),
		SourceRanges:  PrefixesOf(sp.LoadBalancerSourceRanges, f),
		InternalLocal: sp.InternalPolicyLocal,
		ExternalLocal: sp.ExternalPolicyLocal,
	}
	p.ClusterIP, _ = sp.ClusterIP(f)
	p.Sets = CategorizeEndpoints(EndpointsOf(eps, f), sp, node)
	p.ClusterChain = len(p.Sets.Cluster) > 0 && sp.UsesClusterEndpoints()
	p.LocalChain = len(p.Sets.Local) > 0 && sp.UsesLocalEndpoints()
	p.HasEndpoints = p.Sets.HasAny
	p.HasInternal = p.HasEndpoints && (!sp.InternalPolicyLocal || len(p.Sets.Local) > 0)
	p.HasExternal = p.HasEndpoints && (!sp.ExternalPolicyLocal || len(p.Sets.Local) > 0)
	p.ExternallyReachable = sp.NodePort != 0 || len(p.ExternalIPs) > 0 || len(p.LBIPs) > 0
	p.ExternalChain = p.HasEndpoints && p.ExternallyReachable
	p.Firewalled = len(p.LBIPs) > 0 && len(p.SourceRanges) > 0 && !allowsAll(p.SourceRanges)
	return p
}

// AddrsOf returns the addresses of family f.
func AddrsOf(addrs []netip.Addr, f Family) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if FamilyOf(a) == f {
			out = append(out, a)
		}
	}
	return out
}

// PrefixesOf returns the prefixes of family f.
func PrefixesOf(ps []netip.Prefix, f Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if FamilyOf(p.Addr()) == f {
			out = append(out, p)
		}
	}
	return out
}

// EndpointsOf returns the endpoints of family f.
func EndpointsOf(eps []*Endpoint, f Family) []*Endpoint {
	out := make([]*Endpoint, 0, len(eps))
	for _, e := range eps {
		if FamilyOf(e.IP) == f {
			out = append(out, e)
		}
	}
	return out
}

// allowsAll reports whether a source range list admits every address (0.0.0.0/0 or
// ::/0): upstream then applies no firewall.
func allowsAll(ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Bits() == 0 {
			return true
		}
	}
	return false
}
