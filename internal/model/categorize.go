package model

import "slices"

// endpointSets says which endpoints each kind of traffic to one ServicePort may use.
type endpointSets struct {
	// cluster is used by traffic under the Cluster policy; nil when no traffic uses it.
	cluster []*Endpoint
	// local is used by traffic under the Local policy (only endpoints on this node).
	local []*Endpoint
	// all is the union of cluster and local.
	all []*Endpoint
	// any is false when the Service has no usable endpoint anywhere: traffic to it
	// is rejected. (With endpoints elsewhere but none local, Local traffic is dropped.)
	any bool
}

// UsesClusterEndpoints reports whether some traffic to the port uses the Cluster policy.
func (p *ServicePort) UsesClusterEndpoints() bool {
	return !p.InternalPolicyLocal || (p.ExternallyAccessible() && !p.ExternalPolicyLocal)
}

// UsesLocalEndpoints reports whether some traffic to the port uses the Local policy.
func (p *ServicePort) UsesLocalEndpoints() bool {
	return p.InternalPolicyLocal || (p.ExternallyAccessible() && p.ExternalPolicyLocal)
}

// categorize applies upstream's rules: only ready endpoints are used; when a
// set has no ready endpoint it falls back to serving-and-terminating ones; topology
// hints narrow the Cluster set when every ready endpoint carries them and one matches
// this node (or its zone). The Cluster and Local sets fall back independently.
func categorize(eps []*Endpoint, sp *ServicePort, node *Node) endpointSets {
	var s endpointSets
	if sp.UsesClusterEndpoints() {
		mode := topologyMode(eps, node)
		s.cluster = filter(eps, func(e *Endpoint) bool { return e.Ready && availableForTopology(e, mode, node) })
		if len(s.cluster) == 0 {
			s.cluster = filter(eps, func(e *Endpoint) bool { return e.Serving && e.Terminating })
		}
		s.any = len(s.cluster) > 0
	}
	if !sp.UsesLocalEndpoints() {
		s.all = s.cluster
		return s
	}
	hasLocalReady, hasLocalServingTerminating := false, false
	for _, e := range eps {
		switch {
		case e.Ready:
			s.any = true
			hasLocalReady = hasLocalReady || e.IsLocal
		case e.Serving && e.Terminating:
			s.any = true
			hasLocalServingTerminating = hasLocalServingTerminating || e.IsLocal
		}
	}
	switch {
	case hasLocalReady:
		s.local = filter(eps, func(e *Endpoint) bool { return e.IsLocal && e.Ready })
	case hasLocalServingTerminating:
		s.local = filter(eps, func(e *Endpoint) bool { return e.IsLocal && e.Serving && e.Terminating })
	}
	if !sp.UsesClusterEndpoints() {
		s.all = s.local
		return s
	}
	s.all = append([]*Endpoint(nil), s.cluster...)
	for _, e := range s.local {
		if !slices.Contains(s.all, e) {
			s.all = append(s.all, e)
		}
	}
	return s
}

type topology int

const (
	topologyNone topology = iota
	topologySameZone
	topologySameNode
)

// topologyMode decides from the hints alone (upstream never reads trafficDistribution
// itself: the EndpointSlice controller turns it into hints). Node hints win when every
// ready endpoint has one and one names this node; otherwise zone hints likewise.
func topologyMode(eps []*Endpoint, node *Node) topology {
	if node == nil {
		return topologyNone
	}
	zone := node.Zone()
	allNode, allZone, forNode, forZone, anyReady := true, true, false, false, false
	for _, e := range eps {
		if !e.Ready {
			continue
		}
		anyReady = true
		if len(e.NodeHints) == 0 {
			allNode = false
		} else if slices.Contains(e.NodeHints, node.Name) {
			forNode = true
		}
		if len(e.ZoneHints) == 0 {
			allZone = false
		} else if zone != "" && slices.Contains(e.ZoneHints, zone) {
			forZone = true
		}
	}
	switch {
	case !anyReady:
		return topologyNone
	case allNode && forNode:
		return topologySameNode
	case allZone && forZone:
		return topologySameZone
	}
	return topologyNone
}

func availableForTopology(e *Endpoint, mode topology, node *Node) bool {
	switch mode {
	case topologySameNode:
		return slices.Contains(e.NodeHints, node.Name)
	case topologySameZone:
		return slices.Contains(e.ZoneHints, node.Zone())
	}
	return true
}

func filter(eps []*Endpoint, keep func(*Endpoint) bool) []*Endpoint {
	var out []*Endpoint
	for _, e := range eps {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}
