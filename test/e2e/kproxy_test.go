package e2e

import (
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// TestKproxy runs every kproxy case on one cluster and one kproxy to save time. Each
// case uses its own Services; the cases that kill or clean up kproxy come last.
func TestKproxy(t *testing.T) {
	requireKproxy(t)
	for _, mode := range proxyModes() {
		t.Run(mode, func(t *testing.T) { runKproxyCases(t, mode) })
	}
}

func runKproxyCases(t *testing.T, mode string) {
	c := newCluster(t)
	e := &env{c: c, mode: mode}
	if err := c.WriteManifest("nodes", nodesYAML()); err != nil {
		t.Fatal(err)
	}
	e.startProxy(t)
	t.Cleanup(func() {
		if t.Failed() && mode == "nftables" {
			t.Logf("nft list ruleset of node1 at the end:\n%s", c.NFTListRuleset(cluster.KproxyNode))
		} else if t.Failed() {
			t.Logf("iptables-save -c of node1 at the end:\n%s", c.IPTablesSave(cluster.KproxyNode))
			t.Logf("kproxy state dir files: %v", c.StateFiles())
		}
		if e.proxy != nil {
			e.proxy.Kill()
		}
	})
	cases := []struct {
		name string
		run  func(*testing.T, *env)
	}{
		{"ClusterIPFromPod", testClusterIPFromPod},
		{"ClusterIPFromNode", testClusterIPFromNode},
		{"NodePortFromOutside", testNodePortFromOutside},
		{"LoadBalancerAndExternalIP", testLoadBalancerAndExternalIP},
		{"NoEndpointsRefused", testNoEndpointsRefused},
		{"SessionAffinity", testSessionAffinity},
		{"Hairpin", testHairpin},
		{"UDPEndpointReplaced", testUDPEndpointReplaced},
		{"EndpointsScaledUp", testEndpointsScaledUp},
		{"FileWatchLatency", testFileWatchLatency},
		{"PlainWrite", testPlainWrite},
		{"MalformedManifest", testMalformedManifest},
		{"ManyServices", testManyServices},
		{"SIGKILLAndRestart", testSIGKILLAndRestart},
		{"Cleanup", testCleanup},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, e) })
	}
}

// webSvc is the plain ClusterIP Service with an explicit address and all four pods.
var webSvc = cluster.Service{Namespace: ns, Name: "web", ClusterIP: "10.96.0.10", Ports: []cluster.ServicePort{httpPort, dnsPort}}

func testClusterIPFromPod(t *testing.T, e *env) {
	e.dumpOnFailure(t, "web")
	e.apply(t, webSvc, allPods...)
	target := hostPort(webSvc.ClusterIP, 80)
	t.Logf("first answer after %v (includes kproxy start-up)", e.waitAnswer(t, "pod-a1", "tcp", target, firstSync))

	replies := e.c.Request("pod-a1", "tcp", target, 60)
	requireAll(t, "pod-a1 -> web TCP", replies)
	requireBackends(t, "pod-a1 -> web TCP", replies, allPods...)
	if e.userspace() {
		// kproxy relays: every endpoint sees node1's address toward it, never the pod's.
		requireMasqueradedByNode1(t, "pod-a1 -> web TCP (userspace relay)", replies)
		replies = nil
		requireNoNetfilterRules(t, e)
	}
	for _, r := range replies {
		// Other pods see the client's own address; pod-a1 reaching itself is the
		// hairpin case, masqueraded to node1's address on its veth.
		want := "10.244.1.11"
		if r.Backend == "pod-a1" {
			want = cluster.Node1PodGW
		}
		if r.SeenIP() != want {
			t.Errorf("pod-a1 -> web: %s saw source %s, want %s", r.Backend, r.Seen, want)
			break
		}
	}
	// UDP: every datagram from a new socket is a new conntrack entry.
	udp := e.c.Request("pod-a2", "udp", hostPort(webSvc.ClusterIP, 53), 60, cluster.Timeout(time.Second))
	requireAll(t, "pod-a2 -> web UDP", udp)
	requireBackends(t, "pod-a2 -> web UDP", udp, allPods...)
	wantUDP := "10.244.1.12"
	if e.userspace() {
		wantUDP = cluster.Node1IP // relayed from node1's own socket
	}
	if seen := cluster.SeenIPs(udp); len(seen["pod-b1"]) != 1 || seen["pod-b1"][0] != wantUDP {
		t.Errorf("pod-a2 -> web UDP: pod-b1 saw %v, want only %s", seen["pod-b1"], wantUDP)
	}
	t.Logf("spread %v", cluster.Spread(replies))
}

func testClusterIPFromNode(t *testing.T, e *env) {
	e.dumpOnFailure(t, "web")
	e.apply(t, webSvc, allPods...)
	replies := e.c.Request("node1", "tcp", hostPort(webSvc.ClusterIP, 80), 40)
	requireAll(t, "node1 -> web", replies)
	requireBackends(t, "node1 -> web", replies, allPods...)
	for _, r := range replies {
		if !node1Addrs[r.SeenIP()] {
			t.Errorf("node1 -> web: %s saw %s, want a node1 address %v (masqueraded)", r.Backend, r.Seen, node1Addrs)
			break
		}
	}
	// ext is outside the cluster CIDR too: a ClusterIP reached from it is masqueraded.
	ext := e.c.Request("ext", "tcp", hostPort(webSvc.ClusterIP, 80), 20)
	requireAll(t, "ext -> web ClusterIP", ext)
	for _, r := range ext {
		if !node1Addrs[r.SeenIP()] {
			t.Errorf("ext -> web ClusterIP: %s saw %s, want a node1 address (masqueraded)", r.Backend, r.Seen)
			break
		}
	}
}

// requireMasqueradedByNode1 checks what each endpoint saw for external traffic that
// node1 forwarded: node2's pods must see 192.168.50.1, node1's pods the veth gateway,
// and nobody the real client 192.168.50.100.
func requireMasqueradedByNode1(t *testing.T, what string, replies []cluster.Reply) {
	t.Helper()
	for _, r := range replies {
		want := cluster.Node1IP
		if cluster.PodByName(r.Backend).Node == "node1" {
			want = cluster.Node1PodGW
		}
		if r.SeenIP() != want {
			t.Errorf("%s: %s saw %s, want %s (masqueraded by node1)", what, r.Backend, r.Seen, want)
			return
		}
	}
}

func testNodePortFromOutside(t *testing.T, e *env) {
	e.dumpOnFailure(t, "web-np")
	svc := cluster.Service{Namespace: ns, Name: "web-np", Type: "NodePort",
		Ports: []cluster.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, NodePort: 30080}}}
	e.apply(t, svc, allPods...)
	target := hostPort(cluster.Node1IP, 30080)
	e.waitAnswer(t, "ext", "tcp", target, 5*time.Second)
	replies := e.c.Request("ext", "tcp", target, 60)
	requireAll(t, "ext -> NodePort 30080", replies)
	requireBackends(t, "ext -> NodePort 30080", replies, allPods...)
	requireMasqueradedByNode1(t, "ext -> NodePort 30080", replies)
	// Its ClusterIP was allocated and reaches the same endpoints on targetPort 8080.
	cip := e.clusterIP(t, svc)
	fromPod := e.c.Request("pod-a1", "tcp", hostPort(cip, 80), 20)
	requireAll(t, "pod-a1 -> web-np ClusterIP "+cip, fromPod)
}

func testLoadBalancerAndExternalIP(t *testing.T, e *env) {
	e.dumpOnFailure(t, "web-lb")
	svc := cluster.Service{Namespace: ns, Name: "web-lb", Type: "LoadBalancer", Ports: []cluster.ServicePort{httpPort},
		LoadBalancerIngress: []string{"192.168.60.10"}, ExternalIPs: []string{"192.168.70.10"}}
	e.apply(t, svc, allPods...)
	for _, vip := range []string{"192.168.60.10", "192.168.70.10"} {
		target := hostPort(vip, 80)
		e.waitAnswer(t, "ext", "tcp", target, 5*time.Second)
		replies := e.c.Request("ext", "tcp", target, 60)
		requireAll(t, "ext -> "+target, replies)
		requireBackends(t, "ext -> "+target, replies, allPods...)
		requireMasqueradedByNode1(t, "ext -> "+target, replies)
	}
}

func testNoEndpointsRefused(t *testing.T, e *env) {
	e.dumpOnFailure(t, "empty")
	svc := cluster.Service{Namespace: ns, Name: "empty", Type: "NodePort", ClusterIP: "10.96.0.20",
		Ports: []cluster.ServicePort{{Name: "http", Port: 80, NodePort: 30020}, {Name: "dns", Protocol: "UDP", Port: 53, NodePort: 30053}}}
	e.apply(t, svc)
	if err := e.c.WriteManifest("eps-empty", slice(svc).YAML()); err != nil { // a slice with no endpoints
		t.Fatal(err)
	}
	checks := []struct{ from, proto, target string }{
		{"pod-a1", "tcp", "10.96.0.20:80"},
		{"pod-a1", "udp", "10.96.0.20:53"},
		{"ext", "tcp", hostPort(cluster.Node1IP, 30020)},
		{"ext", "udp", hostPort(cluster.Node1IP, 30053)},
	}
	for _, ch := range checks {
		err := e.c.WaitFor(func() error {
			if r := e.c.Request(ch.from, ch.proto, ch.target, 1, cluster.Timeout(time.Second))[0]; r.Error != "refused" {
				return errorf("%s -> %s/%s: got %+v, want refused", ch.from, ch.proto, ch.target, r)
			}
			return nil
		}, 5*time.Second)
		if err != nil {
			t.Error(err)
			continue
		}
		for _, r := range e.c.Request(ch.from, ch.proto, ch.target, 5, cluster.Timeout(2*time.Second)) {
			if r.Error != "refused" || r.Ms > 500 {
				t.Errorf("%s -> %s/%s: got %+v, want \"refused\" well under the 2 s timeout", ch.from, ch.proto, ch.target, r)
			}
		}
	}
}

func testSessionAffinity(t *testing.T, e *env) {
	e.dumpOnFailure(t, "sticky")
	svc := cluster.Service{Namespace: ns, Name: "sticky", Ports: []cluster.ServicePort{httpPort}, ClientIPAffinity: true, AffinityTimeoutSeconds: 300}
	e.apply(t, svc, allPods...)
	target := hostPort(e.clusterIP(t, svc), 80)
	e.waitAnswer(t, "pod-a1", "tcp", target, 5*time.Second)
	for _, client := range []string{"pod-a1", "pod-a2", "node1", "ext"} {
		replies := e.c.Request(client, "tcp", target, 30)
		requireAll(t, client+" -> sticky", replies)
		if got := cluster.Spread(replies); len(got) != 1 {
			t.Errorf("%s -> sticky (ClientIP affinity): answers spread over %v, want one backend", client, got)
		}
	}
}

func testHairpin(t *testing.T, e *env) {
	e.dumpOnFailure(t, "self")
	svc := cluster.Service{Namespace: ns, Name: "self", Ports: []cluster.ServicePort{httpPort, dnsPort}}
	e.apply(t, svc, "pod-a1")
	cip := e.clusterIP(t, svc)
	for _, proto := range []string{"tcp", "udp"} {
		port := 80
		if proto == "udp" {
			port = 53
		}
		target := hostPort(cip, port)
		e.waitAnswer(t, "pod-a1", proto, target, 5*time.Second)
		for _, r := range e.c.Request("pod-a1", proto, target, 5) {
			if r.Backend != "pod-a1" || r.SeenIP() != cluster.Node1PodGW {
				t.Errorf("pod-a1 -> itself via %s/%s: got %+v, want pod-a1 seeing node1's %s (hairpin masquerade), not its own address",
					proto, target, r, cluster.Node1PodGW)
			}
		}
	}
}
