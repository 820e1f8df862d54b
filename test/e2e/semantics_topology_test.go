package e2e

import (
	"testing"

	v1 "k8s.io/api/core/v1"
)

// testTopology: trafficDistribution and EndpointSlice hints, with node1 in zone-a.
// The slices here carry no hints unless a case says so; the model derives them like
// the EndpointSlice controller would. Endpoints: pod-a1 on node1 (zone-a), pod-b1 on
// node2 (zone-b) and pod-b2 named as on node3 (zone-a), so "same zone" and "same
// node" select different sets.
func testTopology(t *testing.T, e *env) {
	eps := []ep{{pod: "pod-a1"}, {pod: "pod-b1"}, {pod: "pod-b2", node: "node3"}}
	cases := []struct {
		name, td string
		ip       string
		eps      []ep
		want     []string
	}{
		{"PreferCloseSameZone", v1.ServiceTrafficDistributionPreferClose, "10.96.1.10", eps, []string{"pod-a1", "pod-b2"}},
		{"PreferSameZone", v1.ServiceTrafficDistributionPreferSameZone, "10.96.1.11", eps, []string{"pod-a1", "pod-b2"}},
		{"PreferSameNode", v1.ServiceTrafficDistributionPreferSameNode, "10.96.1.12", eps, []string{"pod-a1"}},
		// Fallbacks: no endpoint on this node -> the zone; none in the zone -> all.
		{"PreferSameNodeFallsBackToZone", v1.ServiceTrafficDistributionPreferSameNode, "10.96.1.13",
			[]ep{{pod: "pod-b1"}, {pod: "pod-b2", node: "node3"}}, []string{"pod-b2"}},
		{"PreferSameNodeFallsBackToAll", v1.ServiceTrafficDistributionPreferSameNode, "10.96.1.14",
			[]ep{{pod: "pod-b1"}, {pod: "pod-b2"}}, []string{"pod-b1", "pod-b2"}},
		{"PreferCloseNoZoneEndpointUsesAll", v1.ServiceTrafficDistributionPreferClose, "10.96.1.15",
			[]ep{{pod: "pod-b1"}, {pod: "pod-b2"}}, []string{"pod-b1", "pod-b2"}},
		// Only ready endpoints decide the mode: a not-ready one without a zone does not
		// spoil the hints, and a terminating one in zone-a is not used.
		{"PreferCloseIgnoresUnready", v1.ServiceTrafficDistributionPreferClose, "10.96.1.16",
			[]ep{{pod: "pod-a1", state: "terminating"}, {pod: "pod-a2", state: "notready", noZone: true}, {pod: "pod-b1"}, {pod: "pod-b2", node: "node3"}},
			[]string{"pod-b2"}},
		// Explicit hints from the slice win over the zones and the distribution.
		{"HintsForZones", "", "10.96.1.17",
			[]ep{{pod: "pod-a1", forZones: []string{"zone-b"}}, {pod: "pod-b1", forZones: []string{"zone-a"}}, {pod: "pod-b2", forZones: []string{"zone-a"}}},
			[]string{"pod-b1", "pod-b2"}},
		{"HintsForNodes", "", "10.96.1.18",
			[]ep{{pod: "pod-a1", forNodes: []string{"node2"}, forZones: []string{"zone-a"}}, {pod: "pod-b1", forNodes: []string{"node1"}, forZones: []string{"zone-b"}},
				{pod: "pod-b2", forNodes: []string{"node2"}, forZones: []string{"zone-b"}}},
			[]string{"pod-b1"}},
		// Node hints that name another node only: zone hints decide.
		{"HintsForNodesElsewhereUseZones", "", "10.96.1.19",
			[]ep{{pod: "pod-a1", forNodes: []string{"node2"}, forZones: []string{"zone-b"}}, {pod: "pod-b1", forNodes: []string{"node2"}, forZones: []string{"zone-a"}},
				{pod: "pod-b2", forNodes: []string{"node2"}, forZones: []string{"zone-b"}}},
			[]string{"pod-b1"}},
		// One ready endpoint without hints: hints are ignored, all endpoints are used.
		{"PartialHintsIgnored", "", "10.96.1.9",
			[]ep{{pod: "pod-a1", forZones: []string{"zone-b"}}, {pod: "pod-b1", forZones: []string{"zone-a"}}, {pod: "pod-b2"}},
			[]string{"pod-a1", "pod-b1", "pod-b2"}},
	}
	for _, tc := range cases {
		var mods []func(*v1.Service)
		if tc.td != "" {
			mods = append(mods, withTrafficDistribution(tc.td))
		}
		s := svc("topo-"+tc.ip[len("10.96.1."):], "ClusterIP", tc.ip, svcPorts(0, 0), mods...)
		e.putV4(t, s, tc.eps)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.expect(t, "pod-a2", "tcp", hostPort(tc.ip, 80), tc.want, nil)
		})
	}
}
