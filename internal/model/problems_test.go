package model

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

func TestParseAddrRefusesZones(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"fe80::1%eth0", "", `IPv6 zone identifier "eth0" is not allowed`},
		{"fe80::1%1", "", `IPv6 zone identifier "1" is not allowed`},
		{"fe80::1", "fe80::1", ""},
		{"::ffff:10.0.0.1", "10.0.0.1", ""},
		{"010.000.000.001", "10.0.0.1", ""},
		{"10.0.0.256", "", `ParseAddr("10.0.0.256"): IPv4 field has value >255`},
	} {
		ip, err := ParseAddr(tc.in)
		got, gotErr := "", ""
		if err != nil {
			gotErr = err.Error()
		} else {
			got = ip.String()
		}
		if got != tc.want || gotErr != tc.err {
			t.Errorf("ParseAddr(%q) = %q, %q; want %q, %q", tc.in, got, gotErr, tc.want, tc.err)
		}
	}
}

func TestCheckService(t *testing.T) {
	lb := func(ips ...string) *v1.Service {
		s := service("lb", "10.96.0.20", v1.ServicePort{Port: 80, Protocol: v1.ProtocolTCP})
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
		}
		return s
	}
	withExternal := func(ips ...string) *v1.Service {
		s := service("ext", "10.96.0.21", v1.ServicePort{Port: 80, Protocol: v1.ProtocolTCP})
		s.Spec.ExternalIPs = ips
		return s
	}
	ranges := lb("192.0.2.1")
	ranges.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8", "10.0.0.0/33"}
	for _, tc := range []struct {
		name string
		svc  *v1.Service
		want string // "" for no problem
	}{
		{"valid", withExternal("192.0.2.10"), ""},
		{"headless", service("h", "None"), ""},
		{"zone in externalIPs", withExternal("192.0.2.10", "fe80::1%eth0"),
			`Service default/ext is programmed without: spec.externalIPs[1] "fe80::1%eth0": IPv6 zone identifier "eth0" is not allowed`},
		{"zone in LB ingress", lb("192.0.2.1", "fe80::2%lo"),
			`Service default/lb is programmed without: status.loadBalancer.ingress[1].ip "fe80::2%lo": IPv6 zone identifier "lo" is not allowed`},
		{"bad source range", ranges,
			`Service default/lb is programmed without: spec.loadBalancerSourceRanges[1] "10.0.0.0/33": netip.ParsePrefix("10.0.0.0/33"): prefix length out of range`},
		{"bad cluster IP", service("c", "10.96.0.300"),
			`Service default/c is not programmed (no valid cluster IP): spec.clusterIPs[0] "10.96.0.300": ParseAddr("10.96.0.300"): IPv4 field has value >255`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := CheckService(tc.svc)
			got := ""
			if p != nil {
				got = p.Message
				if p.Reason != "InvalidServiceAddress" || p.Object.Kind != "Service" || p.Object.Name != tc.svc.Name || p.Object.Namespace != "default" {
					t.Errorf("problem %+v", p)
				}
			}
			if got != tc.want {
				t.Errorf("CheckService:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
	// ServicePorts leaves out exactly what was reported, and keeps the rest.
	ps := ServicePorts(withExternal("192.0.2.10", "fe80::1%eth0"))
	if len(ps) != 1 || fmt.Sprint(ps[0].ExternalIPs) != "[192.0.2.10]" {
		t.Errorf("ServicePorts with a zoned externalIP: %v", ps)
	}
	ps = ServicePorts(lb("192.0.2.1", "fe80::2%lo"))
	if len(ps) != 1 || fmt.Sprint(ps[0].LoadBalancerIPs) != "[192.0.2.1]" {
		t.Errorf("ServicePorts with a zoned ingress IP: %v", ps)
	}
}

func TestCheckEndpointSlice(t *testing.T) {
	six := slice("web-v6", 8080, endpoint("fd00::1", "node1"), endpoint("fe80::1%eth0", "node1"), endpoint("::ffff:10.0.0.1", "node1"))
	six.AddressType = discovery.AddressTypeIPv6
	fqdn := slice("web-fqdn", 8080, endpoint("example.com", "node1"))
	fqdn.AddressType = discovery.AddressTypeFQDN
	var many []discovery.Endpoint
	for i := range 8 {
		many = append(many, endpoint(fmt.Sprintf("10.0.0.%d%%eth0", i), "node1"))
	}
	for _, tc := range []struct {
		name  string
		slice *discovery.EndpointSlice
		want  string
	}{
		{"valid", slice("web-a", 8080, endpoint("10.244.1.2", "node1")), ""},
		{"fqdn", fqdn, ""},
		{"bad v4 addresses", slice("web-b", 8080, endpoint("10.244.1.2", "node1"), endpoint("10.244.1.999", "node1"),
			endpoint("fd00::2", "node1"), discovery.Endpoint{}),
			`EndpointSlice default/web-b of Service web is programmed without: endpoints[1].addresses[0] "10.244.1.999": ParseAddr("10.244.1.999"): IPv4 field has value >255; ` +
				`endpoints[2].addresses[0] "fd00::2": not an IPv4 address (addressType IPv4); endpoints[3]: no address`},
		{"zone and mapped in v6", six,
			`EndpointSlice default/web-v6 of Service web is programmed without: endpoints[1].addresses[0] "fe80::1%eth0": IPv6 zone identifier "eth0" is not allowed; ` +
				`endpoints[2].addresses[0] "::ffff:10.0.0.1": not an IPv6 address (addressType IPv6)`},
		{"many", slice("web-m", 8080, many...),
			`EndpointSlice default/web-m of Service web is programmed without: endpoints[0].addresses[0] "10.0.0.0%eth0": ParseAddr("10.0.0.0%eth0"): unexpected character (at "%eth0"); ` +
				`endpoints[1].addresses[0] "10.0.0.1%eth0": ParseAddr("10.0.0.1%eth0"): unexpected character (at "%eth0"); ` +
				`endpoints[2].addresses[0] "10.0.0.2%eth0": ParseAddr("10.0.0.2%eth0"): unexpected character (at "%eth0"); ` +
				`endpoints[3].addresses[0] "10.0.0.3%eth0": ParseAddr("10.0.0.3%eth0"): unexpected character (at "%eth0"); ` +
				`endpoints[4].addresses[0] "10.0.0.4%eth0": ParseAddr("10.0.0.4%eth0"): unexpected character (at "%eth0"); and 3 more`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := CheckEndpointSlice(tc.slice)
			got := ""
			if p != nil {
				got = p.Message
				if p.Reason != "InvalidEndpointAddress" || p.Object.Kind != "EndpointSlice" || p.Object.Name != tc.slice.Name {
					t.Errorf("problem %+v", p)
				}
			}
			if got != tc.want {
				t.Errorf("CheckEndpointSlice:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
	// SliceEndpoints keeps exactly the valid endpoints of the slice's family.
	eps := SliceEndpoints(six, "http", v1.ProtocolTCP, "node1", "")
	if len(eps) != 1 || eps[0].String() != "[fd00::1]:8080" {
		t.Errorf("SliceEndpoints of the IPv6 slice: %v, want [fd00::1]:8080 only", eps)
	}
}

// TestTrackerReportsEachProblemOnce: a problem is reported (and logged) when it
// appears, not again at resyncs of the same object; a fix and a relapse report it
// again. Other Services are programmed as if nothing happened.
func TestTrackerReportsEachProblemOnce(t *testing.T) {
	var got []string
	tr := NewTracker("node1", nil, func(p Problem) { got = append(got, p.Reason+" "+p.Object.Kind+" "+p.Object.Name) })
	good := service("web", "10.96.0.10", v1.ServicePort{Name: "http", Port: 80, Protocol: v1.ProtocolTCP})
	bad := service("bad", "10.96.0.11", v1.ServicePort{Name: "http", Port: 80, Protocol: v1.ProtocolTCP})
	bad.Spec.ExternalIPs = []string{"fe80::1%eth0"}
	badSlice := slice("web-bad", 8080, endpoint("10.244.1.2", "node1"), endpoint("fe80::1%eth0", "node1"))
	for range 3 { // the informers' resyncs deliver the same objects again
		tr.OnServiceUpsert(good)
		tr.OnServiceUpsert(bad)
		tr.OnEndpointSliceUpsert(badSlice)
	}
	want := []string{"InvalidServiceAddress Service bad", "InvalidEndpointAddress EndpointSlice web-bad"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reported %q, want %q", got, want)
	}
	s := tr.Snapshot()
	web := ServicePortName{NamespacedName: types.NamespacedName{Namespace: "default", Name: "web"}, Port: "http", Protocol: v1.ProtocolTCP}
	if eps := s.Endpoints[web]; len(eps) != 1 || eps[0].String() != "10.244.1.2:8080" {
		t.Errorf("web's endpoints %v, want the valid one only", eps)
	}
	badName := ServicePortName{NamespacedName: types.NamespacedName{Namespace: "default", Name: "bad"}, Port: "http", Protocol: v1.ProtocolTCP}
	if sp := s.Services[badName]; sp == nil || len(sp.ExternalIPs) != 0 || sp.ClusterIPs[0] != netip.MustParseAddr("10.96.0.11") {
		t.Errorf("default/bad: %+v, want its cluster IP without the external IP", sp)
	}

	// Fixed, then broken again: reported again. Deleted and re-created: again.
	fixed := bad.DeepCopy()
	fixed.Spec.ExternalIPs = nil
	tr.OnServiceUpsert(fixed)
	tr.OnServiceUpsert(bad)
	tr.OnEndpointSliceDelete("default", "web-bad")
	tr.OnEndpointSliceUpsert(badSlice)
	want = append(want, want...)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reported %q, want %q", got, want)
	}
}

// TestDuplicateEndpointsCountOnce: the same address twice in one slice, and in two
// slices of the Service, is one endpoint (upstream deduplicates by address too).
func TestDuplicateEndpointsCountOnce(t *testing.T) {
	tr := NewTracker("node1", nil, nil)
	tr.OnServiceUpsert(service("web", "10.96.0.10", v1.ServicePort{Name: "http", Port: 80, Protocol: v1.ProtocolTCP}))
	tr.OnEndpointSliceUpsert(slice("web-a", 8080, endpoint("10.244.1.2", "node1"), endpoint("10.244.1.2", "node1"), endpoint("10.244.1.3", "node2")))
	tr.OnEndpointSliceUpsert(slice("web-b", 8080, endpoint("10.244.1.3", "node2"), endpoint("010.244.001.002", "node1")))
	s := tr.Snapshot()
	web := ServicePortName{NamespacedName: types.NamespacedName{Namespace: "default", Name: "web"}, Port: "http", Protocol: v1.ProtocolTCP}
	var got []string
	for _, e := range s.Endpoints[web] {
		got = append(got, e.String())
	}
	if strings.Join(got, " ") != "10.244.1.2:8080 10.244.1.3:8080" {
		t.Errorf("endpoints %v, want 10.244.1.2:8080 10.244.1.3:8080", got)
	}
}

// TestMaximumEndpointSlice: a slice of 1,000 endpoints (the API's maximum) gives
// 1,000 endpoints.
func TestMaximumEndpointSlice(t *testing.T) {
	var eps []discovery.Endpoint
	for i := range 1000 {
		eps = append(eps, endpoint(fmt.Sprintf("10.244.%d.%d", i/250, i%250+1), "node2"))
	}
	tr := NewTracker("node1", nil, func(p Problem) { t.Errorf("unexpected problem %s", p.Message) })
	tr.OnServiceUpsert(service("web", "10.96.0.10", v1.ServicePort{Name: "http", Port: 80, Protocol: v1.ProtocolTCP}))
	big := slice("web-big", 8080, eps...)
	big.ObjectMeta = metav1.ObjectMeta{Namespace: "default", Name: "web-big", Labels: map[string]string{discovery.LabelServiceName: "web"}}
	big.Ports[0].Name = ptr.To("http")
	tr.OnEndpointSliceUpsert(big)
	s := tr.Snapshot()
	web := ServicePortName{NamespacedName: types.NamespacedName{Namespace: "default", Name: "web"}, Port: "http", Protocol: v1.ProtocolTCP}
	if n := len(s.Endpoints[web]); n != 1000 || s.EndpointCount != 1000 {
		t.Errorf("%d endpoints (count %d), want 1000", n, s.EndpointCount)
	}
}
