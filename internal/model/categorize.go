package model

import "slices"

// EndpointSets says which endpoints each kind of traffic to one ServicePort may use.
type EndpointSets struct {
	// Cluster is used by traffic under the Cluster policy; nil when no traffic uses it.
	Cluster []*Endpoint
	// Local is used by traffic under the Local policy (only endpoints on this node).
	Local []*Endpoint
	// AllReachable is the union of Cluster and Local: the endpoints that get a
	// per-endpoint chain or entry.
	AllReachable []*Endpoint
	// HasAny is false when the Service has no usable endpoint anywhere: traffic to it
	// is rejected. (With endpoints elsewhere but none local, Local traffic is dropped.)
	HasAny bool
}

// UsesClusterEndpoints reports whether some traffic to the port uses the Cluster policy.
func (p *ServicePort) UsesClusterEndpoints() bool {
	return !p.InternalPolicyLocal || (p.ExternallyAccessible() && !p.ExternalPolicyLocal)
}

// UsesLocalEndpoints reports whether some traffic to the port uses the Local policy.
func (p *ServicePort) UsesLocalEndpoints() bool {
	return p.InternalPolicyLocal || (p.ExternallyAccessible() && p.ExternalPolicyLocal)
}

// CategorizeEndpoints applies upstream's rules: only ready endpoints are used; when a
// set has no ready endpoint it falls back to serving-and-terminating ones; topology
// hints narrow the Cluster set when every ready endpoint carries them and one matches
// this node (or its zone). The Cluster and Local sets fall back independently.
func CategorizeEndpoints(eps []*Endpoint, sp *ServicePort, node *Node) EndpointSets {
	var s EndpointSets
	if sp.UsesClusterEndpoints() {
		mode := topologyMode(eps, node)
		s.Cluster = filter(eps, func(e *Endpoint) bool { return e.Ready && availableForTopology(e, mode, node) })
		if len(s.Cluster) == 0 {
			s.Cluster = filter(eps, func(e *Endpoint) bool { return e.Serving && e.Terminating })
		}
		s.HasAny = len(s.Cluster) > 0
	}
	if !sp.UsesLocalEndpoints() {
		s.AllReachable = s.Cluster
		return s
	}
	hasLocalReady, hasLocalServingTerminating := false, false
	for _, e := range eps {
		switch {
		case e.Ready:
			s.HasAny = true
			hasLocalReady = hasLocalReady || e.IsLocal
		case e.Serving && e.Terminating:
			s.HasAny = true
			hasLocalServingTerminating = hasLocalServingTerminating || e.IsLocal
		}
	}
	switch {
	case hasLocalReady:
		s.Local = filter(eps, func(e *Endpoint) bool { return e.IsLocal && e.Ready })
	case hasLocalServingTerminating:
		s.Local = filter(eps, func(e *Endpoint) bool { return e.IsLocal && e.Serving && e.Terminating })
	}
	if !sp.UsesClusterEndpoints() {
		s.AllReachable = s.Local
		return s
	}
	s.AllReachable = append([]*Endpoint(nil), s.Cluster...)
	for _, e := range s.Local {
		if !slices.Contains(s.AllReachable, e) {
			s.AllReachable = append(s.AllReachable, e)
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
