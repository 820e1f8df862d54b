package model

import (
	"net/netip"
	"slices"
	"time"
)

// PortPlan is the whole decision for one ServicePort in one IP family, following
// upstream kube-proxy: which endpoints each kind of traffic reaches, what happens to
// traffic that finds none, who may reach the LoadBalancer IPs, what is masqueraded,
// and which endpoints a conntrack cleanup keeps. Every backend, the userspace relay
// and the conntrack cleaner read it and decide nothing of their own; they only spell
// it in their kernel's terms.
type PortPlan struct {
	Family Family
	// The port's addresses of the family. ClusterIP is invalid when the port has none
	// in the family (the port is then not programmed in it).
	ClusterIP   netip.Addr
	ExternalIPs []netip.Addr
	LBIPs       []netip.Addr
	// Port and NodePort (0 when none) are the Service's port numbers.
	Port, NodePort int32

	// ClusterEndpoints is the set Cluster-policy traffic is spread over; it is empty when
	// no traffic to the port uses the Cluster policy. LocalEndpoints likewise for the
	// Local policy: endpoints on this node only. Each falls back to serving-terminating
	// endpoints on its own when it has no ready one; topology hints narrow the Cluster
	// set. A backend makes one dispatch (chain, map, balancer) of each non-empty set.
	ClusterEndpoints, LocalEndpoints []*Endpoint
	// AllEndpoints is the union of the two in that order: the endpoints that get a
	// per-endpoint chain, element or real server, and that conntrack cleanup keeps
	// flows to.
	AllEndpoints []*Endpoint
	// Hairpin are the endpoints among AllEndpoints that run on this node: a pod that
	// reaches itself through the Service must be masqueraded, or its reply would not
	// go back through the DNAT. (A remote pod's own traffic meets its own node's rules.)
	Hairpin []*Endpoint

	// Internal is what traffic to the ClusterIP gets; External what traffic to a
	// NodePort, an externalIP or a LoadBalancer IP gets.
	Internal, External Target

	// ExternallyReachable is true with a NodePort, externalIPs or LB IPs in the family.
	ExternallyReachable bool
	// ExternalDispatch says external traffic passes the port's "external destinations"
	// stage (the Service has endpoints and is externally reachable): masquerade, then
	// the short-circuits below, then External's endpoints.
	ExternalDispatch bool
	// MasqueradeExternal is true under externalTrafficPolicy Cluster: every packet
	// arriving at an external address is masqueraded. Under Local only traffic from
	// the node itself is (its source would be the external address itself).
	MasqueradeExternal bool
	// ShortCircuit, under externalTrafficPolicy Local, sends pod traffic and the node's
	// own traffic to external addresses to ClusterEndpoints instead of the Local set,
	// as if it had left for the load balancer and come back in. False when the Cluster
	// set is empty (then such traffic follows External).
	ShortCircuit bool

	// Firewalled is true when loadBalancerSourceRanges restrict who reaches the LB IPs
	// (a list that admits every address restricts nothing). The sources admitted are
	// then SourceRanges and SourceLBIPs: the LB IPs themselves, when a range holds one
	// of the node's addresses (the node reaching its own LB VIP loops back with the VIP
	// as source). NodePorts, externalIPs and the ClusterIP are never restricted.
	Firewalled   bool
	SourceRanges []netip.Prefix
	SourceLBIPs  []netip.Addr

	// Affinity > 0 is ClientIP session affinity with that timeout.
	Affinity time.Duration
	// HealthCheckNodePort (0 when none) serves the count of local ready endpoints to
	// the load balancer.
	HealthCheckNodePort int32
}

// Verdict is what one kind of traffic to a Service port gets.
type Verdict int

const (
	// Forward DNATs the traffic to one of the Target's endpoints.
	Forward Verdict = iota
	// Drop silently drops it: the Service has endpoints, but its Local policy allows
	// none of them here (none runs on this node). Upstream drops rather than rejects so
	// that a load balancer's retry reaches another node.
	Drop
	// Reject answers ICMP port unreachable (TCP: reset): the Service has no usable
	// endpoint anywhere.
	Reject
	// None says there is no such traffic: External is None when the port has no
	// NodePort, externalIP or LB IP in the family.
	None
)

func (v Verdict) String() string {
	switch v {
	case Forward:
		return "forward"
	case Drop:
		return "drop"
	case Reject:
		return "reject"
	}
	return "none"
}

// Target is where one kind of traffic to a port goes.
type Target struct {
	Verdict Verdict
	// Local says the traffic's policy is Local: Endpoints is the plan's LocalEndpoints.
	Local bool
	// Endpoints is the set the traffic is spread over (with Verdict Forward only).
	Endpoints []*Endpoint
}

// NoLocalEndpoints reports a Local policy without a local endpoint while the Service
// has endpoints elsewhere (upstream's sync_proxy_rules_no_local_endpoints_total).
func (t Target) NoLocalEndpoints() bool { return t.Verdict == Drop }

// PlanPort plans one ServicePort for family f from its endpoints (of any family) and
// the node kproxy runs on (nil when unknown).
func PlanPort(sp *ServicePort, eps []*Endpoint, node *Node, f Family) PortPlan {
	p := PortPlan{
		Family:              f,
		ExternalIPs:         AddrsOf(sp.ExternalIPs, f),
		LBIPs:               AddrsOf(sp.LoadBalancerIPs, f),
		Port:                sp.Port,
		NodePort:            sp.NodePort,
		Affinity:            time.Duration(sp.StickyMaxAgeSeconds) * time.Second,
		HealthCheckNodePort: sp.HealthCheckNodePort,
	}
	if ip, ok := sp.ClusterIP(f); ok {
		p.ClusterIP = ip.Unmap()
	}
	s := categorize(EndpointsOf(eps, f), sp, node)
	p.ClusterEndpoints, p.LocalEndpoints, p.AllEndpoints = s.cluster, s.local, s.all
	for _, e := range s.all {
		if e.IsLocal {
			p.Hairpin = append(p.Hairpin, e)
		}
	}
	p.ExternallyReachable = sp.NodePort != 0 || len(p.ExternalIPs) > 0 || len(p.LBIPs) > 0
	p.Internal = target(s, sp.InternalPolicyLocal)
	p.External = Target{Verdict: None}
	if p.ExternallyReachable {
		p.External = target(s, sp.ExternalPolicyLocal)
	}
	p.ExternalDispatch = s.any && p.ExternallyReachable
	p.MasqueradeExternal = !sp.ExternalPolicyLocal
	p.ShortCircuit = sp.ExternalPolicyLocal && len(p.ClusterEndpoints) > 0
	ranges := PrefixesOf(sp.LoadBalancerSourceRanges, f)
	if len(p.LBIPs) > 0 && len(ranges) > 0 && !allowsAll(ranges) {
		p.Firewalled = true
		p.SourceRanges = ranges
		if holdsNodeIP(ranges, node, f) {
			p.SourceLBIPs = p.LBIPs
		}
	}
	return p
}

// target is what traffic under one policy gets from the categorized endpoints.
func target(s endpointSets, local bool) Target {
	t := Target{Local: local, Endpoints: s.cluster}
	if local {
		t.Endpoints = s.local
	}
	switch {
	case !s.any:
		return Target{Verdict: Reject, Local: local}
	case len(t.Endpoints) == 0:
		return Target{Verdict: Drop, Local: local}
	}
	return t
}

// Admits reports whether traffic from src may reach the port's LB IPs.
func (p *PortPlan) Admits(src netip.Addr) bool {
	if !p.Firewalled {
		return true
	}
	src = src.Unmap()
	return slices.Contains(p.SourceLBIPs, src) ||
		slices.ContainsFunc(p.SourceRanges, func(r netip.Prefix) bool { return r.Contains(src) })
}

// holdsNodeIP reports whether one of the ranges holds an address of the node's (from
// its Node object) of family f.
func holdsNodeIP(ranges []netip.Prefix, node *Node, f Family) bool {
	if node == nil {
		return false
	}
	for _, a := range node.Addresses {
		a = a.Unmap()
		if FamilyOf(a) != f {
			continue
		}
		for _, r := range ranges {
			if r.Contains(a) {
				return true
			}
		}
	}
	return false
}

// LocalReadyEndpoints counts the distinct local endpoints that are ready and not
// terminating: what a health check node port reports to the load balancer.
func LocalReadyEndpoints(eps []*Endpoint) []netip.Addr {
	var out []netip.Addr
	for _, e := range eps {
		if e.IsLocal && e.Ready && !e.Terminating && !slices.Contains(out, e.IP) {
			out = append(out, e.IP)
		}
	}
	return out
}

// AddrsOf returns the addresses of family f, IPv4-mapped IPv6 ones unmapped.
func AddrsOf(addrs []netip.Addr, f Family) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if FamilyOf(a) == f {
			out = append(out, a.Unmap())
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
