package e2e

import (
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// udpFlow is one client that sends from a fixed source port, so all its datagrams
// share one conntrack entry: without cleanup it would keep its old DNAT target.
type udpFlow struct {
	name, from, target string
	sport              int
	seen               seenFn
}

var udpFlows = []udpFlow{
	{"ClusterIP", "pod-a1", "10.96.1.40:53", 40040, sawUnmasqueraded("10.244.1.11")},
	{"NodePort", "ext", hostPort(cluster.Node1IP, 31041), 40041, sawMasqueradedBy1},
	{"ExternalIP", "ext", "192.168.70.40:53", 40042, sawMasqueradedBy1},
	{"LoadBalancerIP", "ext", "192.168.60.40:53", 40043, sawMasqueradedBy1},
	{"IPv6ClusterIP", "pod-a1", "[fd00:10:96::40]:53", 40044, sawUnmasqueraded("fd00:10:244:1::11")},
}

func udpCTService(withIPs bool) *v1.Service {
	s := svc("udp-ct", "LoadBalancer", "10.96.1.40", svcPorts(31040, 31041),
		withFamilies(v1.IPFamilyPolicyRequireDualStack, v1.IPv4Protocol, v1.IPv6Protocol),
		func(s *v1.Service) { s.Spec.ClusterIPs = []string{"10.96.1.40", "fd00:10:96::40"} })
	if withIPs {
		withLBIngress("192.168.60.40")(s)
		withExternalIPs("192.168.70.40")(s)
	}
	return s
}

func (e *env) putUDPCT(t *testing.T, withIPs bool, pods ...string) {
	s := udpCTService(withIPs)
	e.put(t, s, epSlice(s, "v4", "IPv4", readyEps(pods...)), epSlice(s, "v6", "IPv6", readyEps(pods...)))
}

// testUDPStaleEndpoint: when the only endpoint of a UDP Service is replaced, a client
// that keeps its source port reaches the new endpoint at once, on every kind of
// Service address: kproxy deleted the stale conntrack entries.
func testUDPStaleEndpoint(t *testing.T, e *env) {
	e.putUDPCT(t, true, "pod-b1")
	for _, f := range udpFlows {
		e.expect(t, f.from, "udp", f.target, []string{"pod-b1"}, f.seen, cluster.SourcePort(f.sport))
	}
	start := time.Now()
	e.putUDPCT(t, true, "pod-b2")
	for _, f := range udpFlows {
		err := e.c.WaitFor(func() error {
			return e.check(f.from, "udp", f.target, 1, []string{"pod-b2"}, f.seen, cluster.SourcePort(f.sport))
		}, 3*time.Second)
		if err != nil {
			t.Errorf("%s flow kept its stale endpoint: %v", f.name, err)
			continue
		}
		// And it stays there (a stale entry would be refreshed by every datagram).
		if err := e.check(f.from, "udp", f.target, 5, []string{"pod-b2"}, f.seen, cluster.SourcePort(f.sport)); err != nil {
			t.Errorf("%s: %v", f.name, err)
		}
	}
	t.Logf("all %d fixed-port flows moved to the new endpoint %v after the change", len(udpFlows), time.Since(start).Round(time.Millisecond))
}

// testUDPStaleServiceIP: when a Service address goes away (externalIP and LB IP
// removed, then the whole Service with its ClusterIP and NodePort deleted), a client
// that keeps its source port gets no answer from the old endpoint.
func testUDPStaleServiceIP(t *testing.T, e *env) {
	e.putUDPCT(t, true, "pod-b1")
	for _, f := range udpFlows {
		e.expect(t, f.from, "udp", f.target, []string{"pod-b1"}, f.seen, cluster.SourcePort(f.sport))
	}
	e.putUDPCT(t, false, "pod-b1")
	for _, f := range udpFlows {
		if f.name == "ExternalIP" || f.name == "LoadBalancerIP" {
			e.expectFail(t, f.from, "udp", f.target, "", cluster.SourcePort(f.sport))
		} else {
			e.expect(t, f.from, "udp", f.target, []string{"pod-b1"}, f.seen, cluster.SourcePort(f.sport))
		}
	}
	if err := e.c.RemoveManifest("sem-udp-ct"); err != nil {
		t.Fatal(err)
	}
	for _, f := range udpFlows {
		e.expectFail(t, f.from, "udp", f.target, "", cluster.SourcePort(f.sport))
	}
}

// sctpSupported reports whether this kernel has SCTP sockets.
func sctpSupported(e *env) bool {
	out, _ := e.c.Exec("pod-a1", "python3", "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132)")
	return !strings.Contains(out, "Protocol not supported") && !strings.Contains(out, "Error")
}

// sctpPort is where every pod's raw-socket SCTP echoserver answers (see
// test/echoserver/sctp.go): an INIT/INIT-ACK exchange that conntrack and NAT treat
// like the start of a real association.
const sctpPort = 9000

func sctpService(withIPs bool) *v1.Service {
	s := svc("sctp", "LoadBalancer", "10.96.1.80", []v1.ServicePort{port("sctp", v1.ProtocolSCTP, sctpPort, 31080)},
		withFamilies(v1.IPFamilyPolicyRequireDualStack, v1.IPv4Protocol, v1.IPv6Protocol),
		func(s *v1.Service) { s.Spec.ClusterIPs = []string{"10.96.1.80", "fd00:10:96::80"} })
	if withIPs {
		withLBIngress("192.168.60.80")(s)
		withExternalIPs("192.168.70.80")(s)
	}
	return s
}

func (e *env) putSCTP(t *testing.T, withIPs bool, pods ...string) {
	s := sctpService(withIPs)
	e.put(t, s, epSlice(s, "v4", "IPv4", readyEps(pods...)), epSlice(s, "v6", "IPv6", readyEps(pods...)))
}

// testSCTP: SCTP Services through ClusterIP (both families), NodePort, externalIP and
// LB IP, and conntrack cleanup of SCTP flows when the endpoint is replaced and when a
// Service IP goes away. The kernel under test may lack SCTP sockets; the packets are
// real SCTP all the same (raw sockets), so the rules, conntrack and NAT are exercised.
func testSCTP(t *testing.T, e *env) {
	if !sctpSupported(e) {
		t.Logf("this kernel has no SCTP sockets (no sctp module); SCTP is tested with raw-socket INIT/INIT-ACK exchanges")
	}
	e.putSCTP(t, true, allPods...)
	cip := hostPort("10.96.1.80", sctpPort)
	e.expect(t, "pod-a1", "sctp", cip, allPods, sawFromPod("pod-a1"))
	e.expect(t, "pod-a2", "sctp", "[fd00:10:96::80]:9000", allPods, sawFromPod6("pod-a2"))
	for _, target := range []string{hostPort(cluster.Node1IP, 31080), "192.168.70.80:9000", "192.168.60.80:9000"} {
		e.expect(t, "ext", "sctp", target, allPods, sawMasqueradedBy1)
	}

	flows := []udpFlow{
		{"ClusterIP", "pod-a1", cip, 40080, sawUnmasqueraded("10.244.1.11")},
		{"NodePort", "ext", hostPort(cluster.Node1IP, 31080), 40081, sawMasqueradedBy1},
		{"ExternalIP", "ext", "192.168.70.80:9000", 40082, sawMasqueradedBy1},
		{"LoadBalancerIP", "ext", "192.168.60.80:9000", 40083, sawMasqueradedBy1},
	}
	e.putSCTP(t, true, "pod-b1")
	for _, f := range flows {
		e.expect(t, f.from, "sctp", f.target, []string{"pod-b1"}, f.seen, cluster.SourcePort(f.sport))
	}
	e.putSCTP(t, true, "pod-b2")
	for _, f := range flows {
		err := e.c.WaitFor(func() error {
			return e.check(f.from, "sctp", f.target, 1, []string{"pod-b2"}, f.seen, cluster.SourcePort(f.sport))
		}, 3*time.Second)
		if err != nil {
			t.Errorf("SCTP %s flow kept its stale endpoint: %v", f.name, err)
		}
	}
	// The externalIP and LB IP go away: the fixed-port flows to them get no answer.
	e.putSCTP(t, false, "pod-b2")
	for _, f := range flows[2:] {
		e.expectFail(t, f.from, "sctp", f.target, "", cluster.SourcePort(f.sport))
	}
	e.expect(t, flows[0].from, "sctp", flows[0].target, []string{"pod-b2"}, flows[0].seen, cluster.SourcePort(flows[0].sport))
}
