package e2e

import (
	"fmt"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// semNS is the Kubernetes namespace of the TestSemantics Services.
const semNS = "sem"

// Zones of the semantics cluster's nodes. node3 is a Node with no proxy and no
// namespace: endpoints may name it so that "same zone, other node" can be told apart
// from "same node" (its endpoints are pod IPs that physically live on node2).
var nodeZones = map[string]string{"node1": "zone-a", "node2": "zone-b", "node3": "zone-a"}

// svc builds a v1 Service in semNS; mods fill in what each case varies.
func svc(name, typ, clusterIP string, ports []v1.ServicePort, mods ...func(*v1.Service)) *v1.Service {
	s := &v1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Namespace: semNS, Name: name},
		Spec:       v1.ServiceSpec{Type: v1.ServiceType(typ), Ports: ports},
	}
	if clusterIP != "" {
		s.Spec.ClusterIP = clusterIP
		s.Spec.ClusterIPs = []string{clusterIP}
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func port(name string, proto v1.Protocol, p, nodePort int32) v1.ServicePort {
	return v1.ServicePort{Name: name, Protocol: proto, Port: p, TargetPort: intstr.FromInt32(p), NodePort: nodePort}
}

// svcPorts are the ports of most semantics Services: http 80/TCP and dns 53/UDP.
func svcPorts(httpNP, dnsNP int32) []v1.ServicePort {
	return []v1.ServicePort{port("http", v1.ProtocolTCP, 80, httpNP), port("dns", v1.ProtocolUDP, 53, dnsNP)}
}

func withLBIngress(ips ...string) func(*v1.Service) {
	return func(s *v1.Service) {
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
		}
	}
}

func withExternalIPs(ips ...string) func(*v1.Service) {
	return func(s *v1.Service) { s.Spec.ExternalIPs = ips }
}

func withETPLocal(hcnp int32) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = hcnp
	}
}

func withITPLocal(s *v1.Service) {
	local := v1.ServiceInternalTrafficPolicyLocal
	s.Spec.InternalTrafficPolicy = &local
}

func withTrafficDistribution(td string) func(*v1.Service) {
	return func(s *v1.Service) { s.Spec.TrafficDistribution = &td }
}

// ep is one endpoint of a slice built by epSlice.
type ep struct {
	pod  string
	node string // the pod's node when ""
	// state: "" ready; "terminating" ready=false serving=true terminating=true;
	// "notready" ready=false serving=false; "notready-terminating" all false but terminating.
	state    string
	forZones []string
	forNodes []string
	noZone   bool
}

func readyEps(pods ...string) []ep {
	var out []ep
	for _, p := range pods {
		out = append(out, ep{pod: p})
	}
	return out
}

// epSlice renders an EndpointSlice of the given family for every port of s.
func epSlice(s *v1.Service, suffix string, family discoveryv1.AddressType, eps []ep) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{Namespace: semNS, Name: s.Name + "-" + suffix,
			Labels: map[string]string{discoveryv1.LabelServiceName: s.Name}},
		AddressType: family,
	}
	for _, p := range s.Spec.Ports {
		name, proto, target := p.Name, p.Protocol, p.TargetPort.IntVal
		sl.Ports = append(sl.Ports, discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &target})
	}
	for _, e := range eps {
		pod := cluster.PodByName(e.pod)
		ip := pod.IP
		if family == discoveryv1.AddressTypeIPv6 {
			ip = cluster.PodIP6(pod)
		}
		node := e.node
		if node == "" {
			node = pod.Node
		}
		ready, serving, terminating := true, true, false
		switch e.state {
		case "terminating":
			ready, serving, terminating = false, true, true
		case "notready":
			ready, serving = false, false
		case "notready-terminating":
			ready, serving, terminating = false, false, true
		}
		de := discoveryv1.Endpoint{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			NodeName:   &node,
		}
		if zone := nodeZones[node]; zone != "" && !e.noZone {
			de.Zone = &zone
		}
		if len(e.forZones) > 0 || len(e.forNodes) > 0 {
			de.Hints = &discoveryv1.EndpointHints{}
			for _, z := range e.forZones {
				de.Hints.ForZones = append(de.Hints.ForZones, discoveryv1.ForZone{Name: z})
			}
			for _, n := range e.forNodes {
				de.Hints.ForNodes = append(de.Hints.ForNodes, discoveryv1.ForNode{Name: n})
			}
		}
		sl.Endpoints = append(sl.Endpoints, de)
	}
	return sl
}

// semNode renders a dual-stack Node with a zone label.
func semNode(name, ip4, ip6, cidr4, cidr6 string) string {
	n := &v1.Node{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			v1.LabelHostname: name, v1.LabelTopologyZone: nodeZones[name]}},
		Spec: v1.NodeSpec{PodCIDR: cidr4, PodCIDRs: []string{cidr4, cidr6}},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: ip4},
			{Type: v1.NodeInternalIP, Address: ip6},
			{Type: v1.NodeHostName, Address: name},
		}},
	}
	return cluster.ObjectYAML(n)
}

// put writes a Service and its slices as one manifest file, so they change together.
func (e *env) put(t *testing.T, s *v1.Service, slices ...*discoveryv1.EndpointSlice) {
	t.Helper()
	docs := []string{cluster.ObjectYAML(s)}
	for _, sl := range slices {
		docs = append(docs, cluster.ObjectYAML(sl))
	}
	if err := e.c.WriteManifest("sem-"+s.Name, cluster.Documents(docs...)); err != nil {
		t.Fatal(err)
	}
}

// v4 is the common case: the Service with one IPv4 slice.
func (e *env) putV4(t *testing.T, s *v1.Service, eps []ep) {
	t.Helper()
	e.put(t, s, epSlice(s, "v4", discoveryv1.AddressTypeIPv4, eps))
}

// seenFn says which source address a backend must see; "" accepts any.
type seenFn func(backend string) string

// saw returns a seenFn that expects addr at every backend, except that a node1 pod
// reached through a masquerade by node1 sees node1's pod gateway.
func sawUnmasqueraded(client string) seenFn { return func(string) string { return client } }

// sawMasqueradedBy1 is what endpoints see of traffic node1 masqueraded: node2's pods
// node1's LAN address, node1's pods node1's pod gateway.
func sawMasqueradedBy1(backend string) string {
	if cluster.PodByName(backend).Node == "node1" {
		return cluster.Node1PodGW
	}
	return cluster.Node1IP
}

func sawMasqueradedBy1v6(backend string) string {
	if cluster.PodByName(backend).Node == "node1" {
		return cluster.Node1PodGW6
	}
	return cluster.Node1IP6
}

// sawFromPod is what endpoints see of unmasqueraded traffic from a pod: its own
// address, except the pod itself (hairpin: masqueraded to its node's gateway).
func sawFromPod(client string) seenFn {
	c := cluster.PodByName(client)
	return func(backend string) string {
		if backend == client {
			return cluster.Node1PodGW
		}
		return c.IP
	}
}

// check sends n requests and says what is wrong with them: not all answered, not
// exactly the backends in want, or a backend seeing another source than seen says.
func (e *env) check(from, proto, target string, n int, want []string, seen seenFn, opts ...cluster.RequestOpt) error {
	replies := e.c.Request(from, proto, target, n, append([]cluster.RequestOpt{cluster.Timeout(time.Second)}, opts...)...)
	what := fmt.Sprintf("%s -> %s/%s", from, proto, target)
	if errs := cluster.Errors(replies); len(errs) > 0 {
		return fmt.Errorf("%s: failures: %s", what, cluster.Summary(replies))
	}
	got := cluster.Spread(replies)
	ok := len(got) == len(want)
	for _, w := range want {
		ok = ok && got[w] > 0
	}
	if !ok {
		return fmt.Errorf("%s: want answers from exactly %v; %s", what, want, cluster.Summary(replies))
	}
	if seen != nil {
		for _, r := range replies {
			if w := seen(r.Backend); w != "" && r.SeenIP() != w {
				return fmt.Errorf("%s: %s saw source %s, want %s; %s", what, r.Backend, r.SeenIP(), w, cluster.Summary(replies))
			}
		}
	}
	return nil
}

// expect waits (up to settle) until n requests from one namespace are all answered by
// exactly the want backends, each seeing the source seen says.
func (e *env) expect(t *testing.T, from, proto, target string, want []string, seen seenFn, opts ...cluster.RequestOpt) {
	t.Helper()
	n := 8 * len(want)
	if n < 12 {
		n = 12
	}
	if err := e.c.WaitFor(func() error { return e.check(from, proto, target, n, want, seen, opts...) }, settle); err != nil {
		t.Error(err)
	}
}

// expectFail waits until a request from one namespace fails with the given error
// ("timeout" for a DROP, "refused" for a REJECT, "" for any failure), then checks that
// the next one fails alike: no backend may answer.
func (e *env) expectFail(t *testing.T, from, proto, target, want string, opts ...cluster.RequestOpt) {
	t.Helper()
	opts = append([]cluster.RequestOpt{cluster.Timeout(500 * time.Millisecond)}, opts...)
	matches := func(r cluster.Reply) bool {
		return r.Error != "" && (want == "" || r.Error == want)
	}
	err := e.c.WaitFor(func() error {
		if r := e.c.Request(from, proto, target, 1, opts...)[0]; !matches(r) {
			return fmt.Errorf("%s -> %s/%s: got %+v, want failure %q", from, proto, target, r, want)
		}
		return nil
	}, settle)
	if err != nil {
		t.Error(err)
		return
	}
	for _, r := range e.c.Request(from, proto, target, 1, opts...) {
		if !matches(r) {
			t.Errorf("%s -> %s/%s: got %+v after a %q, want failure %q every time", from, proto, target, r, want, want)
		}
	}
}

// settle bounds how long a manifest change may take to show in the kernel's rules
// (kproxy syncs within ~1 s; restarts and first syncs take longer).
const settle = 6 * time.Second
