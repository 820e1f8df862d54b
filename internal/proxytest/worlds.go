package proxytest

import (
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// World is a cluster as the API server holds it, and the packets that test a
// backend's rules for it.
type World struct {
	Name     string
	Services []*v1.Service
	Slices   []*discovery.EndpointSlice
	Node     *v1.Node
	Packets  []Packet
}

// Worlds returns the shared table, freshly built: "a" has a Service of every kind,
// "b" changes most of them (endpoints replaced, added and gone, a Service deleted and
// one added, source ranges and affinity changed), "empty" has none. Tests sync every
// ordered pair of them.
func Worlds() []World { return []World{worldA(), worldB(), worldEmpty()} }

func p80(nodePort int32) []v1.ServicePort {
	return []v1.ServicePort{port("p80", 80, v1.ProtocolTCP, nodePort)}
}

// The Services of world a, by what they exercise (reference 4.2's groups).
var (
	// web: two ports, a local and a remote endpoint (group A).
	web = svc{ns: "ns1", name: "web", clusterIP: "172.30.0.41",
		ports: []v1.ServicePort{port("p80", 80, v1.ProtocolTCP, 0), port("dns", 53, v1.ProtocolUDP, 0)}}
	// np: a NodePort with externalTrafficPolicy Cluster (groups E, I).
	np = svc{ns: "ns2", name: "np", typ: v1.ServiceTypeNodePort, clusterIP: "172.30.0.42", ports: p80(3001)}
	// lb: a LoadBalancer with source ranges, one of them holding the node (group C).
	lb = svc{ns: "ns3", name: "lb", typ: v1.ServiceTypeLoadBalancer, clusterIP: "172.30.0.43", ports: p80(3003),
		lbIPs: []string{"1.2.3.4"}, sourceRanges: []string{"192.168.0.0/24", " 203.0.113.0/25"}}
	// local: externalTrafficPolicy Local on an externalIP, a LB IP and a NodePort
	// (group D).
	local = svc{ns: "ns4", name: "local", typ: v1.ServiceTypeLoadBalancer, clusterIP: "172.30.0.44", ports: p80(3004),
		externalIPs: []string{"192.168.99.11"}, lbIPs: []string{"5.6.7.8"}, etpLocal: true, healthCheckNP: 30004}
	// itp: internalTrafficPolicy Local (group F).
	itp = svc{ns: "ns5", name: "itp", clusterIP: "172.30.0.45", ports: p80(0), itpLocal: true}
	// term: terminating endpoints under both policies (group G).
	term = svc{ns: "ns6", name: "term", typ: v1.ServiceTypeLoadBalancer, clusterIP: "172.30.0.46", ports: p80(3006),
		lbIPs: []string{"9.10.11.12"}, etpLocal: true, healthCheckNP: 30006}
	// sticky: ClientIP session affinity.
	sticky = svc{ns: "ns7", name: "sticky", clusterIP: "172.30.0.47", ports: p80(0), affinity: 10800}
	// empty: every kind of address, no endpoints (group B).
	empty = svc{ns: "ns8", name: "empty", typ: v1.ServiceTypeLoadBalancer, clusterIP: "172.30.0.48", ports: p80(3008),
		externalIPs: []string{"192.168.99.18"}, lbIPs: []string{"1.2.3.8"}}
	// noloc: externalTrafficPolicy Local with no local endpoint.
	noloc = svc{ns: "ns9", name: "noloc", typ: v1.ServiceTypeNodePort, clusterIP: "172.30.0.49", ports: p80(3009), etpLocal: true}
	// added: the Service world b adds.
	added = svc{ns: "ns10", name: "new", clusterIP: "172.30.0.50", ports: p80(0)}
)

func (s svc) slice(eps ...ep) *discovery.EndpointSlice {
	return slice(s.ns, s.name, sliceName(s.ns, s.name), s.ports, eps...)
}

func worldA() World {
	return World{
		Name: "a",
		Node: node(),
		Services: []*v1.Service{web.object(), np.object(), lb.object(), local.object(), itp.object(), term.object(),
			sticky.object(), empty.object(), noloc.object()},
		Slices: []*discovery.EndpointSlice{
			web.slice(ready("10.180.0.1", NodeName), ready("10.180.2.1", OtherNode)),
			np.slice(ready("10.180.0.2", OtherNode), ready("10.180.2.2", NodeName)),
			lb.slice(ready("10.180.0.3", OtherNode)),
			local.slice(ready("10.180.0.4", OtherNode), ready("10.180.2.4", NodeName)),
			itp.slice(ready("10.180.0.5", NodeName), ready("10.180.1.5", OtherNode)),
			term.slice(servingTerminating("10.180.6.2", NodeName), servingTerminating("10.180.6.3", NodeName),
				gone("10.180.6.4", NodeName), ready("10.180.6.5", OtherNode)),
			sticky.slice(ready("10.180.0.7", OtherNode), ready("10.180.1.7", OtherNode)),
			noloc.slice(ready("10.180.1.9", OtherNode)),
		},
		Packets: packetsA(),
	}
}

func worldB() World {
	lbB := lb
	lbB.sourceRanges = []string{"203.0.113.0/25"}
	stickyB := sticky
	stickyB.affinity = 600
	return World{
		Name: "b",
		Node: node(),
		Services: []*v1.Service{web.object(), lbB.object(), local.object(), itp.object(), term.object(),
			stickyB.object(), empty.object(), noloc.object(), added.object()},
		Slices: []*discovery.EndpointSlice{
			web.slice(ready("10.180.0.1", NodeName), ready("10.180.2.11", OtherNode)),
			lb.slice(ready("10.180.0.3", OtherNode), ready("10.180.2.3", NodeName)),
			local.slice(ready("10.180.0.4", OtherNode)),
			itp.slice(ready("10.180.1.5", OtherNode)),
			term.slice(gone("10.180.6.2", NodeName), gone("10.180.6.5", OtherNode)),
			sticky.slice(ready("10.180.0.7", OtherNode), ready("10.180.1.7", OtherNode), ready("10.180.2.7", NodeName)),
			empty.slice(ready("10.180.1.8", OtherNode)),
			noloc.slice(ready("10.180.1.9", OtherNode)),
			added.slice(ready("10.180.0.10", OtherNode)),
		},
		Packets: packetsB(),
	}
}

func worldEmpty() World {
	return World{Name: "empty", Node: node(), Packets: packetsEmpty()}
}
