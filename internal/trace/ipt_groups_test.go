package trace

import (
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/iptables"
	"github.com/kproxy/kproxy/internal/model"
)

// These tests trace the packets of reference 4.2's groups through rulesets that
// kproxy's own iptables builder writes for the groups' setups.

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func svcPort(ns, name, port string, proto v1.Protocol, clusterIP string, p int32) *model.ServicePort {
	return &model.ServicePort{
		Name:       model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}, Port: port, Protocol: proto},
		ClusterIPs: addrs(clusterIP), Port: p, Protocol: proto,
	}
}

// endpoint is ready and serving; node "test-node" makes it local.
func endpoint(ip string, port int32, node string) *model.Endpoint {
	return &model.Endpoint{IP: netip.MustParseAddr(ip), Port: port, NodeName: node, IsLocal: node == "test-node", Ready: true, Serving: true}
}

type world map[*model.ServicePort][]*model.Endpoint

func (w world) snapshot() *model.Snapshot {
	s := &model.Snapshot{
		Services:       map[model.ServicePortName]*model.ServicePort{},
		Endpoints:      map[model.ServicePortName][]*model.Endpoint{},
		PortsByService: map[types.NamespacedName][]*model.ServicePort{},
		Changed:        map[types.NamespacedName]struct{}{},
		Node:           &model.Node{Name: "test-node", Addresses: addrs("192.168.0.2")},
	}
	for sp, eps := range w {
		s.Services[sp.Name] = sp
		s.Endpoints[sp.Name] = model.MergeEndpoints(eps)
		s.PortsByService[sp.Name.NamespacedName] = append(s.PortsByService[sp.Name.NamespacedName], sp)
		s.Changed[sp.Name.NamespacedName] = struct{}{}
	}
	return s
}

// fixtureParams is upstream's test fixture: detect-local by 10.0.0.0/8, mark 0x4000,
// NodePorts on every local address, localhost NodePorts.
func fixtureParams() iptables.Params {
	return iptables.Params{
		Family: model.IPv4, MasqueradeBit: 14, NodePortAll: true, LocalhostNodePorts: true, DropInvalid: true,
		LocalDetector: iptables.DetectByCIDR(netip.MustParsePrefix("10.0.0.0/8")),
	}
}

func build(p iptables.Params, w world) []byte {
	return iptables.Build(iptables.BuildInput{Params: p, Snapshot: w.snapshot(), Full: true}).Data()
}

func TestGroupAClusterIPGeneral(t *testing.T) {
	svc1 := svcPort("ns1", "svc1", "http", v1.ProtocolTCP, "172.30.0.41", 80)
	w := world{svc1: {endpoint("10.180.0.1", 80, "test-node")}}
	eps := []*model.Endpoint{endpoint("10.180.0.1", 0, "test-node"), endpoint("10.180.2.1", 0, "node2")}
	for _, p := range []struct {
		name   string
		proto  v1.Protocol
		port   int32
		target int32
	}{{"http", v1.ProtocolTCP, 80, 80}, {"https", v1.ProtocolTCP, 443, 8443}, {"dns-udp", v1.ProtocolUDP, 53, 53},
		{"dns-tcp", v1.ProtocolTCP, 53, 5353}, {"dns-sctp", v1.ProtocolSCTP, 53, 53}} {
		sp := svcPort("ns2", "svc2", p.name, p.proto, "172.30.0.42", p.port)
		for _, e := range eps {
			c := *e
			c.Port = p.target
			w[sp] = append(w[sp], &c)
		}
	}
	both := func(port string) []string { return []string{"10.180.0.1:" + port, "10.180.2.1:" + port} }
	runIPTCases(t, build(fixtureParams(), w), fixtureEnv(), []flowCase{
		{name: "A1", src: "10.180.0.2", dst: "172.30.0.41:80", verdict: VerdictDNAT, endpoints: []string{"10.180.0.1:80"}},
		{name: "A2 hairpin", src: "10.180.0.1", dst: "172.30.0.41:80", verdict: VerdictDNAT, endpoints: []string{"10.180.0.1:80"}, masq: true},
		{name: "A3", src: "10.180.0.2", dst: "172.30.0.42:80", verdict: VerdictDNAT, endpoints: both("80")},
		{name: "A4", src: "10.180.0.2", dst: "172.30.0.42:443", verdict: VerdictDNAT, endpoints: both("8443")},
		{name: "A5", src: "10.180.0.2", dst: "172.30.0.42:53", verdict: VerdictDNAT, endpoints: both("5353")},
		{name: "A6", proto: "udp", src: "10.180.0.2", dst: "172.30.0.42:53", verdict: VerdictDNAT, endpoints: both("53")},
		{name: "A7", proto: "sctp", src: "10.180.0.2", dst: "172.30.0.42:53", verdict: VerdictDNAT, endpoints: both("53")},
		{name: "A8", proto: "udp", src: "10.180.0.2", dst: "172.30.0.42:80", verdict: VerdictNone},
		{name: "A9", src: "10.180.0.2", dst: "172.30.0.41:443", verdict: VerdictNone},
	})
}

func TestGroupBNoEndpointsReject(t *testing.T) {
	sp := svcPort("ns", "svc", "p80", v1.ProtocolTCP, "172.30.0.41", 80)
	sp.NodePort, sp.ExternalIPs, sp.LoadBalancerIPs = 3001, addrs("192.168.99.11"), addrs("1.2.3.4")
	runIPTCases(t, build(fixtureParams(), world{sp: nil}), fixtureEnv(), []flowCase{
		{name: "B1", src: "10.0.0.2", dst: "172.30.0.41:80", verdict: VerdictReject},
		{name: "B2", from: FromExternal, src: "203.0.113.2", dst: "192.168.99.11:80", verdict: VerdictReject},
		{name: "B3", src: "10.0.0.2", dst: "192.168.0.2:3001", verdict: VerdictReject},
		{name: "B4", from: FromExternal, src: "203.0.113.2", dst: "192.168.0.2:3001", verdict: VerdictReject},
		{name: "B5", src: "10.0.0.2", dst: "1.2.3.4:80", verdict: VerdictReject},
		{name: "B6", from: FromExternal, src: "203.0.113.2", dst: "1.2.3.4:80", verdict: VerdictReject},
		{name: "B node", from: FromNode, src: "192.168.0.2", dst: "172.30.0.41:80", verdict: VerdictReject},
	})
}

func TestGroupCLoadBalancerSourceRanges(t *testing.T) {
	sp := svcPort("ns", "lb", "p80", v1.ProtocolTCP, "172.30.0.41", 80)
	sp.NodePort, sp.LoadBalancerIPs = 3001, addrs("1.2.3.4", "5.6.7.8")
	sp.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("192.168.0.0/24"), netip.MustParsePrefix("203.0.113.0/25")}
	ep := []string{"10.180.0.1:80"}
	cases := []flowCase{
		{name: "C1", src: "10.0.0.2", dst: "172.30.0.41:80", verdict: VerdictDNAT, endpoints: ep},
		{name: "C2", from: FromExternal, src: "203.0.113.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT, endpoints: ep, masq: true},
		{name: "C3", from: FromExternal, src: "203.0.113.130", dst: "192.168.0.2:3001", verdict: VerdictDNAT, endpoints: ep, masq: true},
	}
	for _, lb := range []string{"1.2.3.4", "5.6.7.8"} {
		cases = append(cases,
			flowCase{name: "C4 " + lb, from: FromExternal, src: "203.0.113.2", dst: lb + ":80", verdict: VerdictDNAT, endpoints: ep, masq: true},
			flowCase{name: "C5 " + lb, from: FromExternal, src: "203.0.113.130", dst: lb + ":80", verdict: VerdictDrop},
			flowCase{name: "C6 " + lb, src: "10.0.0.2", dst: lb + ":80", verdict: VerdictDrop},
			flowCase{name: "C7 " + lb, from: FromNode, src: "192.168.0.2", dst: lb + ":80", verdict: VerdictDNAT, endpoints: ep, masq: true},
			flowCase{name: "C8 " + lb, from: FromExternal, src: lb, dst: lb + ":80", verdict: VerdictDNAT, endpoints: ep, masq: true},
		)
	}
	runIPTCases(t, build(fixtureParams(), world{sp: {endpoint("10.180.0.1", 80, "node2")}}), fixtureEnv(), cases)
}

func externalService(local bool) (*model.ServicePort, []*model.Endpoint) {
	sp := svcPort("ns", "ext", "p80", v1.ProtocolTCP, "172.30.0.41", 80)
	sp.NodePort, sp.ExternalIPs, sp.LoadBalancerIPs = 3001, addrs("192.168.99.11"), addrs("1.2.3.4")
	sp.ExternalPolicyLocal = local
	if local {
		sp.HealthCheckNodePort = 30000
	}
	return sp, []*model.Endpoint{endpoint("10.180.0.1", 80, "node2"), endpoint("10.180.2.1", 80, "test-node")}
}

func TestGroupDExternalTrafficPolicyLocal(t *testing.T) {
	sp, eps := externalService(true)
	both, local := []string{"10.180.0.1:80", "10.180.2.1:80"}, []string{"10.180.2.1:80"}
	runIPTCases(t, build(fixtureParams(), world{sp: eps}), fixtureEnv(), []flowCase{
		{name: "D1", src: "10.0.0.2", dst: "172.30.0.41:80", verdict: VerdictDNAT, endpoints: both},
		{name: "D2", src: "10.0.0.2", dst: "192.168.99.11:80", verdict: VerdictDNAT, endpoints: both},
		{name: "D3", from: FromExternal, src: "203.0.113.2", dst: "192.168.99.11:80", verdict: VerdictDNAT, endpoints: local},
		{name: "D4", src: "10.0.0.2", dst: "1.2.3.4:80", verdict: VerdictDNAT, endpoints: both},
		{name: "D5", from: FromExternal, src: "203.0.113.2", dst: "1.2.3.4:80", verdict: VerdictDNAT, endpoints: local},
		{name: "D6", src: "10.0.0.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT, endpoints: both},
		{name: "D7", from: FromExternal, src: "203.0.113.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT, endpoints: local},
		// J1: the health check NodePort is accepted by filter KUBE-NODEPORTS.
		{name: "J1", from: FromExternal, src: "1.2.3.4", dst: "192.168.0.2:30000", verdict: VerdictAccept},
	})
}

func TestGroupEExternalTrafficPolicyCluster(t *testing.T) {
	sp, eps := externalService(false)
	both := []string{"10.180.0.1:80", "10.180.2.1:80"}
	runIPTCases(t, build(fixtureParams(), world{sp: eps}), fixtureEnv(), []flowCase{
		{name: "E1", src: "10.0.0.2", dst: "172.30.0.41:80", verdict: VerdictDNAT, endpoints: both},
		{name: "E2", src: "10.0.0.2", dst: "192.168.99.11:80", verdict: VerdictDNAT, endpoints: both, masq: true},
		{name: "E3", from: FromExternal, src: "203.0.113.2", dst: "192.168.99.11:80", verdict: VerdictDNAT, endpoints: both, masq: true},
		{name: "E4", src: "10.0.0.2", dst: "1.2.3.4:80", verdict: VerdictDNAT, endpoints: both, masq: true},
		{name: "E5", from: FromExternal, src: "203.0.113.2", dst: "1.2.3.4:80", verdict: VerdictDNAT, endpoints: both, masq: true},
		{name: "E6", src: "10.0.0.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT, endpoints: both, masq: true},
		{name: "E7", from: FromExternal, src: "203.0.113.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT, endpoints: both, masq: true},
		{name: "J after", from: FromExternal, src: "1.2.3.4", dst: "192.168.0.2:30000", verdict: VerdictNone},
	})
}

func TestGroupFInternalTrafficPolicy(t *testing.T) {
	for _, c := range []struct {
		name      string
		local     bool
		nodes     []string
		verdict   Verdict
		endpoints []string
	}{
		{"F1", false, []string{"test-node", "node1", "node2"}, VerdictDNAT, []string{"10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"}},
		{"F2", true, []string{"test-node", "node1", "node2"}, VerdictDNAT, []string{"10.0.1.1:80"}},
		{"F3", true, []string{"test-node", "test-node", "node2"}, VerdictDNAT, []string{"10.0.1.1:80", "10.0.1.2:80"}},
		{"F4", true, []string{"node0", "node1", "node2"}, VerdictDrop, nil},
		{"F5", true, nil, VerdictReject, nil},
	} {
		sp := svcPort("ns", "itp", "", v1.ProtocolTCP, "172.30.1.1", 80)
		sp.InternalPolicyLocal = c.local
		var eps []*model.Endpoint
		for i, n := range c.nodes {
			eps = append(eps, endpoint(netip.AddrFrom4([4]byte{10, 0, 1, byte(i + 1)}).String(), 80, n))
		}
		runIPTCases(t, build(fixtureParams(), world{sp: eps}), fixtureEnv(), []flowCase{
			{name: c.name, src: "10.0.0.2", dst: "172.30.1.1:80", verdict: c.verdict, endpoints: c.endpoints},
		})
	}
}

func TestGroupINodePorts(t *testing.T) {
	sp := svcPort("ns", "np", "p80", v1.ProtocolTCP, "172.30.0.41", 80)
	sp.NodePort = 3001
	w := world{sp: {endpoint("10.180.0.1", 80, "node2"), endpoint("10.180.2.1", 80, "test-node")}}
	both := []string{"10.180.0.1:80", "10.180.2.1:80"}
	runIPTCases(t, build(fixtureParams(), w), fixtureEnv(), []flowCase{
		{name: "I1", src: "10.0.0.2", dst: "172.30.0.41:80", verdict: VerdictDNAT, endpoints: both},
		{name: "I2", from: FromExternal, src: "203.0.113.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT, endpoints: both, masq: true},
		{name: "I3", from: FromNode, src: "192.168.0.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT, endpoints: both, masq: true},
		{name: "I4", from: FromNode, src: "127.0.0.1", dst: "127.0.0.1:3001", verdict: VerdictDNAT, endpoints: both, masq: true},
		{name: "I5", from: FromExternal, src: "203.0.113.2", dst: "192.168.1.2:3001", verdict: VerdictDNAT, endpoints: both, masq: true},
	})
	p := fixtureParams()
	p.LocalhostNodePorts = false
	runIPTCases(t, build(p, w), fixtureEnv(), []flowCase{
		{name: "I4'", from: FromNode, src: "127.0.0.1", dst: "127.0.0.1:3001", verdict: VerdictNone},
	})
	p = fixtureParams()
	p.NodePortAll, p.NodePortIPs = false, addrs("192.168.0.2", "127.0.0.1")
	runIPTCases(t, build(p, w), fixtureEnv(), []flowCase{
		{name: "I5'", from: FromExternal, src: "203.0.113.2", dst: "192.168.1.2:3001", verdict: VerdictNone},
		{name: "I2 listed IP", from: FromExternal, src: "203.0.113.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT, endpoints: both, masq: true},
	})
}

// Group K: the masquerade matrix, with and without a local detector and masqueradeAll.
func TestGroupKInternalExternalMasquerade(t *testing.T) {
	w := world{}
	type svc struct{ cip, lb, np string }
	svcs := []svc{{"172.30.0.41", "1.2.3.4", "3001"}, {"172.30.0.42", "5.6.7.8", "3002"}, {"172.30.0.43", "9.10.11.12", "3003"}}
	for i, s := range svcs {
		n := byte(i + 1)
		sp := svcPort("ns", "svc"+string('1'+rune(i)), "p80", v1.ProtocolTCP, s.cip, 80)
		sp.NodePort = int32(3001 + i)
		sp.LoadBalancerIPs = addrs(s.lb)
		sp.ExternalPolicyLocal = i == 1
		sp.InternalPolicyLocal = i == 2
		w[sp] = []*model.Endpoint{endpoint(netip.AddrFrom4([4]byte{10, 180, 0, n}).String(), 80, "test-node"),
			endpoint(netip.AddrFrom4([4]byte{10, 180, 1, n}).String(), 80, "node2")}
	}
	both := func(n string) []string { return []string{"10.180.0." + n + ":80", "10.180.1." + n + ":80"} }
	only := func(n string) []string { return []string{"10.180.0." + n + ":80"} }
	type row struct {
		from     Origin
		src      string
		dst      func(s svc) string
		eps      [3][]string
		masq     [3]bool
		noDetect *[3]bool // masquerade without a local detector, when it differs
	}
	cip := func(s svc) string { return s.cip + ":80" }
	np := func(s svc) string { return "192.168.0.2:" + s.np }
	lb := func(s svc) string { return s.lb + ":80" }
	no := [3]bool{}
	rows := []row{
		{FromPod, "10.0.0.2", cip, [3][]string{both("1"), both("2"), only("3")}, [3]bool{}, nil},
		{FromPod, "10.0.0.2", np, [3][]string{both("1"), both("2"), both("3")}, [3]bool{true, false, true}, nil},
		{FromPod, "10.0.0.2", lb, [3][]string{both("1"), both("2"), both("3")}, [3]bool{true, false, true}, nil},
		{FromNode, "192.168.0.2", cip, [3][]string{both("1"), both("2"), only("3")}, [3]bool{true, true, true}, &no},
		{FromNode, "192.168.0.2", np, [3][]string{both("1"), both("2"), both("3")}, [3]bool{true, true, true}, nil},
		{FromNode, "192.168.0.2", lb, [3][]string{both("1"), both("2"), both("3")}, [3]bool{true, true, true}, nil},
		{FromNode, "127.0.0.1", func(s svc) string { return "127.0.0.1:" + s.np }, [3][]string{both("1"), both("2"), both("3")}, [3]bool{true, true, true}, nil},
		{FromExternal, "203.0.113.2", cip, [3][]string{both("1"), both("2"), only("3")}, [3]bool{true, true, true}, &no},
		{FromExternal, "203.0.113.2", np, [3][]string{both("1"), only("2"), both("3")}, [3]bool{true, false, true}, nil},
		{FromExternal, "203.0.113.2", lb, [3][]string{both("1"), only("2"), both("3")}, [3]bool{true, false, true}, nil},
	}
	for _, variant := range []string{"detector", "no detector", "masqueradeAll"} {
		p := fixtureParams()
		switch variant {
		case "no detector":
			p.LocalDetector = iptables.LocalDetector{}
		case "masqueradeAll":
			p.MasqueradeAll = true
		}
		var cases []flowCase
		for _, r := range rows {
			for i, s := range svcs {
				c := flowCase{name: variant + " " + string(r.from) + " " + r.src + " -> " + r.dst(s), from: r.from, src: r.src,
					dst: r.dst(s), verdict: VerdictDNAT, endpoints: r.eps[i], masq: r.masq[i]}
				switch {
				case variant == "no detector" && r.noDetect != nil:
					c.masq = r.noDetect[i]
				case variant == "no detector" && r.from == FromPod && i == 1 && r.dst(s) != cip(s):
					c.endpoints = only("2") // no pod short-circuit without a detector
				case variant == "masqueradeAll" && r.dst(s) == cip(s):
					c.masq = true
				}
				cases = append(cases, c)
			}
		}
		runIPTCases(t, build(p, w), fixtureEnv(), cases)
	}
}

func TestSessionAffinityIsReported(t *testing.T) {
	sp := svcPort("ns3", "svc3", "p80", v1.ProtocolTCP, "172.30.0.43", 80)
	sp.StickyMaxAgeSeconds = 10800
	dump := build(fixtureParams(), world{sp: {endpoint("10.180.0.4", 80, "node2"), endpoint("10.180.0.5", 80, "node2"), endpoint("10.180.0.6", 80, "node3")}})
	c := flowCase{name: "affinity", src: "10.0.0.2", dst: "172.30.0.43:80", verdict: VerdictDNAT,
		endpoints: []string{"10.180.0.4:80", "10.180.0.5:80", "10.180.0.6:80"}}
	r, err := TraceIPTables(dump, c.packet(t), fixtureEnv())
	if err != nil {
		t.Fatal(err)
	}
	c.check(t, r)
	if r.Affinity == nil || r.Affinity.TimeoutSeconds != 10800 {
		t.Errorf("affinity %+v, want a 10800s timeout\n%s", r.Affinity, text(r))
	}
	for _, e := range r.Endpoints {
		if e.Probability < 0.333 || e.Probability > 0.334 {
			t.Errorf("endpoint %s: probability %v, want 1/3", e.Address, e.Probability)
		}
	}
}

// referenceWorld is reference 2.5's setup (svc1, svc2) plus a ClientIP-affinity
// Service and a LoadBalancer with source ranges (groups C and the affinity case).
func referenceWorldRuleset() []byte {
	svc1 := svcPort("ns1", "svc1", "p80", v1.ProtocolTCP, "172.30.0.41", 80)
	svc2 := svcPort("ns2", "svc2", "p80", v1.ProtocolTCP, "172.30.0.42", 80)
	svc2.NodePort, svc2.ExternalPolicyLocal = 3001, true
	svc3 := svcPort("ns3", "svc3", "p80", v1.ProtocolTCP, "172.30.0.43", 80)
	svc3.StickyMaxAgeSeconds = 10800
	lb := svcPort("ns5", "lb", "p80", v1.ProtocolTCP, "172.30.0.45", 80)
	lb.LoadBalancerIPs = addrs("1.2.3.4")
	lb.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/25")}
	return build(fixtureParams(), world{
		svc1: {endpoint("10.180.0.1", 80, "node2"), endpoint("10.180.0.2", 80, "node2")},
		svc2: {endpoint("10.180.0.3", 8080, "test-node"), endpoint("10.180.1.3", 8080, "node2")},
		svc3: {endpoint("10.180.0.4", 80, "node2"), endpoint("10.180.0.5", 80, "node2")},
		lb:   {endpoint("10.180.0.9", 80, "node2")},
	})
}

func referenceWorldCases() []flowCase {
	return []flowCase{
		{name: "pod to ClusterIP", src: "10.0.0.2", dst: "172.30.0.41:80", verdict: VerdictDNAT,
			endpoints: []string{"10.180.0.1:80", "10.180.0.2:80"}},
		{name: "external to ClusterIP", from: FromExternal, src: "203.0.113.2", dst: "172.30.0.41:80", verdict: VerdictDNAT,
			endpoints: []string{"10.180.0.1:80", "10.180.0.2:80"}, masq: true},
		{name: "external to NodePort eTP=Local", from: FromExternal, src: "203.0.113.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT,
			endpoints: []string{"10.180.0.3:8080"}},
		{name: "pod to NodePort eTP=Local", src: "10.0.0.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT,
			endpoints: []string{"10.180.0.3:8080", "10.180.1.3:8080"}},
		{name: "affinity Service", src: "10.0.0.2", dst: "172.30.0.43:80", verdict: VerdictDNAT,
			endpoints: []string{"10.180.0.4:80", "10.180.0.5:80"}},
		{name: "C4", from: FromExternal, src: "203.0.113.2", dst: "1.2.3.4:80", verdict: VerdictDNAT, endpoints: []string{"10.180.0.9:80"}, masq: true},
		{name: "C5", from: FromExternal, src: "203.0.113.130", dst: "1.2.3.4:80", verdict: VerdictDrop},
		{name: "unknown port", src: "10.0.0.2", dst: "172.30.0.41:443", verdict: VerdictNone},
	}
}

func TestReferenceWorldFromBuilder(t *testing.T) {
	runIPTCases(t, referenceWorldRuleset(), fixtureEnv(), referenceWorldCases())
}
