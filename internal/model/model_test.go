package model

import (
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

func service(name, ip string, ports ...v1.ServicePort) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       v1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip}, Ports: ports, Type: v1.ServiceTypeClusterIP},
	}
}

// slice is an EndpointSlice of the Service "web".
func slice(name string, port int32, eps ...discovery.Endpoint) *discovery.EndpointSlice {
	return &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{discovery.LabelServiceName: "web"}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port), Protocol: ptr.To(v1.ProtocolTCP)}},
		Endpoints:   eps,
	}
}

// endpoint is a ready endpoint.
func endpoint(ip, node string) discovery.Endpoint {
	return discovery.Endpoint{Addresses: []string{ip}, NodeName: ptr.To(node), Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}}
}

func TestTrackerMergesSlicesAndTracksChanges(t *testing.T) {
	tr := NewTracker("node1", nil, nil)
	tr.OnServiceUpsert(service("web", "10.96.0.10", v1.ServicePort{Name: "http", Port: 80, Protocol: v1.ProtocolTCP}))
	tr.OnServiceUpsert(service("other", "10.96.0.11", v1.ServicePort{Name: "http", Port: 80, Protocol: v1.ProtocolTCP}))
	tr.OnEndpointSliceUpsert(slice("web-a", 8080, endpoint("10.244.1.2", "node1"), endpoint("10.244.2.2", "node2")))
	// The same endpoint in a second slice counts once.
	tr.OnEndpointSliceUpsert(slice("web-b", 8080, endpoint("10.244.2.2", "node2"), endpoint("10.244.1.3", "node1")))
	s := tr.Snapshot()
	name := ServicePortName{NamespacedName: types.NamespacedName{Namespace: "default", Name: "web"}, Port: "http", Protocol: v1.ProtocolTCP}
	eps := s.Endpoints[name]
	if len(eps) != 3 {
		t.Fatalf("got %d endpoints, want 3: %v", len(eps), eps)
	}
	if eps[0].String() != "10.244.1.2:8080" || !eps[0].IsLocal || eps[2].IsLocal {
		t.Errorf("endpoints not sorted or locality wrong: %v", eps)
	}
	if len(s.Changed) != 2 {
		t.Errorf("changed = %v, want both Services", s.Changed)
	}

	// Deleting one slice marks only its Service changed, and keeps the other slice's endpoints.
	tr.OnEndpointSliceDelete("default", "web-a")
	s = tr.Snapshot()
	if _, ok := s.Changed[name.NamespacedName]; !ok || len(s.Changed) != 1 {
		t.Errorf("changed = %v, want only default/web", s.Changed)
	}
	if got := len(s.Endpoints[name]); got != 2 {
		t.Errorf("after deleting a slice: %d endpoints, want 2", got)
	}
	if len(s.PreviousEndpoints[name]) != 3 {
		t.Errorf("previous endpoints = %d, want 3", len(s.PreviousEndpoints[name]))
	}

	tr.OnServiceDelete("default", "web")
	s = tr.Snapshot()
	if _, ok := s.Services[name]; ok {
		t.Errorf("deleted Service still in the snapshot")
	}
	if len(s.PreviousPorts[name.NamespacedName]) != 1 {
		t.Errorf("deleted Service's previous ports missing")
	}
}

func TestHeadlessAndExternalNameGetNoPorts(t *testing.T) {
	headless := service("h", "None", v1.ServicePort{Port: 80})
	if got := ServicePorts(headless); got != nil {
		t.Errorf("headless: %v", got)
	}
	en := service("e", "", v1.ServicePort{Port: 80})
	en.Spec.Type = v1.ServiceTypeExternalName
	if got := ServicePorts(en); got != nil {
		t.Errorf("ExternalName: %v", got)
	}
}

func TestServicePortsLoadBalancerIPMode(t *testing.T) {
	svc := service("lb", "10.96.0.5", v1.ServicePort{Port: 80, NodePort: 30080})
	svc.Spec.Type = v1.ServiceTypeLoadBalancer
	svc.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{
		{IP: "192.168.60.10"},
		{IP: "192.168.60.11", IPMode: ptr.To(v1.LoadBalancerIPModeProxy)},
		{IP: "192.168.60.12", IPMode: ptr.To(v1.LoadBalancerIPModeVIP)},
	}
	svc.Spec.SessionAffinity = v1.ServiceAffinityClientIP
	ps := ServicePorts(svc)
	if len(ps) != 1 {
		t.Fatalf("ports: %v", ps)
	}
	p := ps[0]
	want := []netip.Addr{netip.MustParseAddr("192.168.60.10"), netip.MustParseAddr("192.168.60.12")}
	if len(p.LoadBalancerIPs) != 2 || p.LoadBalancerIPs[0] != want[0] || p.LoadBalancerIPs[1] != want[1] {
		t.Errorf("LB IPs = %v, want %v (ipMode Proxy excluded)", p.LoadBalancerIPs, want)
	}
	if p.NodePort != 30080 || p.StickyMaxAgeSeconds != 10800 || p.Protocol != v1.ProtocolTCP {
		t.Errorf("port = %+v", p)
	}
}

func TestParseAddrToleratesLeadingZeros(t *testing.T) {
	ip, err := ParseAddr(" 172.30.0.041 ")
	if err != nil || ip.String() != "172.30.0.41" {
		t.Errorf("ParseAddr = %v, %v", ip, err)
	}
	if _, err := ParseAddr("300.1.1.1"); err == nil {
		t.Errorf("300.1.1.1 parsed")
	}
}

func TestTopologyFromTrafficDistribution(t *testing.T) {
	node := &Node{Name: "node1", Labels: map[string]string{v1.LabelTopologyZone: "zone-a"}}
	zoned := func(ip, nodeName, zone string) discovery.Endpoint {
		e := endpoint(ip, nodeName)
		e.Zone = ptr.To(zone)
		return e
	}
	sl := slice("s", 80, zoned("10.0.0.1", "node1", "zone-a"), zoned("10.0.0.2", "node2", "zone-a"), zoned("10.0.0.3", "node3", "zone-b"))
	sp := &ServicePort{Port: 80}
	pick := func(td string) []string {
		eps := SliceEndpoints(sl, "http", v1.ProtocolTCP, "node1", td)
		var out []string
		for _, e := range PlanPort(sp, eps, node, IPv4).ClusterEndpoints {
			out = append(out, e.IP.String())
		}
		return out
	}
	if got := pick(""); len(got) != 3 {
		t.Errorf("no trafficDistribution: %v, want all 3", got)
	}
	if got := pick(v1.ServiceTrafficDistributionPreferClose); len(got) != 2 || got[0] != "10.0.0.1" || got[1] != "10.0.0.2" {
		t.Errorf("PreferClose: %v, want the two in zone-a", got)
	}
	if got := pick(v1.ServiceTrafficDistributionPreferSameNode); len(got) != 1 || got[0] != "10.0.0.1" {
		t.Errorf("PreferSameNode: %v, want node1's", got)
	}
	// No endpoint on this node: PreferSameNode falls back to the zone.
	node.Name = "node9"
	if got := pick(v1.ServiceTrafficDistributionPreferSameNode); len(got) != 2 {
		t.Errorf("PreferSameNode without a local endpoint: %v, want zone-a's two", got)
	}
	// No endpoint in this zone either: every endpoint.
	node.Labels[v1.LabelTopologyZone] = "zone-z"
	if got := pick(v1.ServiceTrafficDistributionPreferSameZone); len(got) != 3 {
		t.Errorf("PreferSameZone without a zone match: %v, want all 3", got)
	}
}

func TestSnapshotEndpointCountFollowsChanges(t *testing.T) {
	tr := NewTracker("node1", nil, nil)
	tr.OnServiceUpsert(service("web", "10.96.0.10", v1.ServicePort{Name: "http", Port: 80, Protocol: v1.ProtocolTCP}))
	tr.OnEndpointSliceUpsert(slice("web-a", 8080, endpoint("10.244.1.2", "node1"), endpoint("10.244.2.2", "node2")))
	if n := tr.Snapshot().EndpointCount; n != 2 {
		t.Fatalf("count = %d, want 2", n)
	}
	tr.OnEndpointSliceUpsert(slice("web-b", 8080, endpoint("10.244.1.3", "node1")))
	if n := tr.Snapshot().EndpointCount; n != 3 {
		t.Errorf("after a second slice: count = %d, want 3", n)
	}
	// A snapshot without changes still reports the total.
	if n := tr.Snapshot().EndpointCount; n != 3 {
		t.Errorf("unchanged: count = %d, want 3", n)
	}
	tr.OnServiceDelete("default", "web")
	if n := tr.Snapshot().EndpointCount; n != 0 {
		t.Errorf("after deleting the Service: count = %d, want 0", n)
	}
}
