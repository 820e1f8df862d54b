package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

func testUDPEndpointReplaced(t *testing.T, e *env) {
	e.dumpOnFailure(t, "dns")
	svc := cluster.Service{Namespace: ns, Name: "dns", ClusterIP: "10.96.0.53", Ports: []cluster.ServicePort{dnsPort}}
	e.apply(t, svc, "pod-b1")
	target := hostPort(svc.ClusterIP, 53)
	const srcPort = 40053 // one source port: one conntrack entry for the whole test
	e.waitAnswer(t, "pod-a1", "udp", target, 5*time.Second)
	wantSeen := "10.244.1.11"
	if e.userspace() {
		// The flow is kproxy's own socket to the endpoint: it sees node1's address.
		// The move below holds the same way: kproxy ends flows to removed endpoints.
		wantSeen = cluster.Node1IP
	}
	for _, r := range e.c.Request("pod-a1", "udp", target, 3, cluster.SourcePort(srcPort)) {
		if r.Backend != "pod-b1" || r.SeenIP() != wantSeen {
			t.Fatalf("before the change: got %+v, want pod-b1 seeing %s", r, wantSeen)
		}
	}
	e.setEndpoints(t, svc, "pod-b2")
	start := time.Now()
	// Each probe refreshes the old conntrack entry, so only a conntrack cleanup by
	// kproxy can move this flow to pod-b2.
	var last cluster.Reply
	err := e.c.WaitFor(func() error {
		last = e.c.Request("pod-a1", "udp", target, 1, cluster.SourcePort(srcPort), cluster.Timeout(300*time.Millisecond))[0]
		if last.Backend != "pod-b2" {
			return errorf("datagrams from port %d still get %+v", srcPort, last)
		}
		return nil
	}, 3*time.Second)
	if err != nil {
		t.Logf("conntrack of node1:\n%s", conntrackDump(e))
		t.Fatalf("UDP flow was not moved to the new endpoint: %v", err)
	}
	t.Logf("UDP flow with fixed source port moved to pod-b2 %v after the EndpointSlice change", time.Since(start).Round(time.Millisecond))
	for _, r := range e.c.Request("pod-a1", "udp", target, 5, cluster.SourcePort(srcPort)) {
		if r.Backend != "pod-b2" {
			t.Errorf("after the move: got %+v, want pod-b2 every time", r)
		}
	}
}

func conntrackDump(e *env) string {
	out, err := e.c.Exec(cluster.KproxyNode, "conntrack", "-L")
	if err != nil {
		return err.Error()
	}
	return out
}

func testEndpointsScaledUp(t *testing.T, e *env) {
	e.dumpOnFailure(t, "scale")
	svc := cluster.Service{Namespace: ns, Name: "scale", Ports: []cluster.ServicePort{httpPort}}
	e.apply(t, svc, "pod-b2")
	target := hostPort(e.clusterIP(t, svc), 80)
	e.waitAnswer(t, "pod-a1", "tcp", target, 5*time.Second)
	before := e.c.Request("pod-a1", "tcp", target, 20)
	requireAll(t, "scale with 1 endpoint", before)
	requireBackends(t, "scale with 1 endpoint", before, "pod-b2")

	e.setEndpoints(t, svc, "pod-b2", "pod-a1", "pod-a2", "pod-b1")
	start := time.Now()
	seen := map[string]bool{}
	err := e.c.WaitFor(func() error {
		for _, r := range e.c.Request("pod-a1", "tcp", target, 4, cluster.Timeout(500*time.Millisecond)) {
			if r.Error == "" {
				seen[r.Backend] = true
			}
		}
		if len(seen) < 4 {
			return errorf("answered so far: %v", seen)
		}
		return nil
	}, 5*time.Second)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("after scaling to 4 endpoints: %v", err)
	}
	t.Logf("all 4 endpoints answered %v after the EndpointSlice change", elapsed.Round(time.Millisecond))
	if elapsed > propagation+500*time.Millisecond { // the client's own probing costs up to ~0.5 s
		t.Errorf("scale-up took %v to reach all endpoints, want about %v", elapsed, propagation)
	}
}

func testFileWatchLatency(t *testing.T, e *env) {
	e.dumpOnFailure(t, "late")
	svc := cluster.Service{Namespace: ns, Name: "late", ClusterIP: "10.96.0.77", Ports: []cluster.ServicePort{httpPort}}
	target := hostPort(svc.ClusterIP, 80)
	if r := e.c.Request("pod-a1", "tcp", target, 1, cluster.Timeout(300*time.Millisecond))[0]; r.Error == "" {
		t.Fatalf("late answers before its manifest exists: %+v", r)
	}
	// One file with both documents, so a single write is a single change.
	if err := e.c.WriteManifest("late", cluster.Documents(svc.YAML(), slice(svc, "pod-a2").YAML())); err != nil {
		t.Fatal(err)
	}
	elapsed := e.waitAnswer(t, "pod-a1", "tcp", target, 5*time.Second)
	t.Logf("new Service file answered %v after it was written", elapsed.Round(time.Millisecond))
	if elapsed > propagation {
		t.Errorf("new Service answered after %v, want within %v", elapsed, propagation)
	}
	requireBackends(t, "pod-a1 -> late", e.c.Request("pod-a1", "tcp", target, 5), "pod-a2")
	// Removing the file removes the Service.
	if err := e.c.RemoveManifest("late"); err != nil {
		t.Fatal(err)
	}
	err := e.c.WaitFor(func() error {
		if r := e.c.Request("pod-a1", "tcp", target, 1, cluster.Timeout(300*time.Millisecond))[0]; r.Error == "" {
			return errorf("late still answers: %+v", r)
		}
		return nil
	}, 3*time.Second)
	if err != nil {
		t.Error(err)
	}
}

func testPlainWrite(t *testing.T, e *env) {
	e.dumpOnFailure(t, "plain")
	svc := cluster.Service{Namespace: ns, Name: "plain", ClusterIP: "10.96.0.78", Ports: []cluster.ServicePort{httpPort}}
	if err := e.c.WriteManifestInPlace("plain", cluster.Documents(svc.YAML(), slice(svc, "pod-b1").YAML())); err != nil {
		t.Fatal(err)
	}
	e.waitAnswer(t, "pod-a1", "tcp", hostPort(svc.ClusterIP, 80), 3*time.Second)
	// Rewrite in place with other endpoints.
	if err := e.c.WriteManifestInPlace("plain", cluster.Documents(svc.YAML(), slice(svc, "pod-a2").YAML())); err != nil {
		t.Fatal(err)
	}
	err := e.c.WaitFor(func() error {
		replies := e.c.Request("pod-a1", "tcp", hostPort(svc.ClusterIP, 80), 4, cluster.Timeout(500*time.Millisecond))
		if s := cluster.Spread(replies); len(s) != 1 || s["pod-a2"] != 4 {
			return errorf("after the in-place rewrite: %s", cluster.Summary(replies))
		}
		return nil
	}, 3*time.Second)
	if err != nil {
		t.Error(err)
	}
}

func testMalformedManifest(t *testing.T, e *env) {
	e.dumpOnFailure(t, "web", "after-bad")
	e.requireRunning(t)
	e.apply(t, webSvc, allPods...) // unchanged if an earlier case wrote it already
	e.waitAnswer(t, "pod-a1", "tcp", hostPort(webSvc.ClusterIP, 80), firstSync)
	const bad = "zz-broken.yaml"
	if err := e.c.WriteManifest(bad, "apiVersion: v1\nkind: Service\nmetadata: {name: broken\nspec: [ports\n"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := e.c.RemoveManifest(bad); err != nil {
			t.Error(err)
		}
	}()
	var errLine string
	err := e.c.WaitFor(func() error {
		for _, line := range strings.Split(e.proxy.Logs(), "\n") {
			// klog error lines start with "E"; accept any line that says error too.
			if strings.Contains(line, bad) && (strings.HasPrefix(line, "E") || strings.Contains(strings.ToLower(line), "error")) {
				errLine = line
				return nil
			}
		}
		return errorf("kproxy log has no error line naming %s", bad)
	}, 5*time.Second)
	t.Logf("kproxy reported: %s", errLine)
	if err != nil {
		t.Errorf("malformed manifest: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	e.requireRunning(t)
	web := e.c.Request("pod-a1", "tcp", hostPort(webSvc.ClusterIP, 80), 30)
	requireAll(t, "web after a malformed manifest", web)
	requireBackends(t, "web after a malformed manifest", web, allPods...)
	// A valid change after the bad file is still applied.
	svc := cluster.Service{Namespace: ns, Name: "after-bad", ClusterIP: "10.96.0.79", Ports: []cluster.ServicePort{httpPort}}
	e.apply(t, svc, "pod-b2")
	e.waitAnswer(t, "pod-a1", "tcp", hostPort(svc.ClusterIP, 80), 3*time.Second)
	web = e.c.Request("pod-a1", "tcp", hostPort(webSvc.ClusterIP, 80), 30)
	requireAll(t, "web after a further valid change", web)
	requireBackends(t, "web after a further valid change", web, allPods...)
}

func testSIGKILLAndRestart(t *testing.T, e *env) {
	e.dumpOnFailure(t, "alloc")
	e.requireRunning(t)
	svc := cluster.Service{Namespace: ns, Name: "alloc", Type: "NodePort", Ports: []cluster.ServicePort{httpPort}}
	e.apply(t, svc, "pod-a2", "pod-b1")
	cip, np := e.clusterIP(t, svc), e.nodePort(t, svc, "http")
	e.waitAnswer(t, "pod-a1", "tcp", hostPort(cip, 80), 5*time.Second)
	t.Logf("alloc got ClusterIP %s and NodePort %d", cip, np)

	if err := e.proxy.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := e.proxy.Wait(30 * time.Second); err == nil {
		t.Fatalf("kproxy exited 0 after SIGKILL?")
	} else if e.proxy.Running() {
		t.Fatalf("kproxy still running 30s after SIGKILL: %v", err)
	}
	if e.userspace() {
		// kproxy is the data path: with it dead nothing relays. The Service addresses
		// stay on node1, so clients are refused at once rather than left hanging.
		requireRefusedWhileDead(t, e, cip, np)
	} else {
		// The kernel keeps the rules: traffic flows with no proxy running.
		requireBackends(t, "alloc ClusterIP with kproxy dead", e.c.Request("pod-a1", "tcp", hostPort(cip, 80), 20), "pod-a2", "pod-b1")
		requireBackends(t, "alloc NodePort with kproxy dead", e.c.Request("ext", "tcp", hostPort(cluster.Node1IP, np), 20), "pod-a2", "pod-b1")
		requireAll(t, "web with kproxy dead", e.c.Request("pod-a1", "tcp", hostPort(webSvc.ClusterIP, 80), 10))
	}

	e.startProxy(t)
	// A Service added after the restart shows the new process has synced.
	marker := cluster.Service{Namespace: ns, Name: "after-restart", ClusterIP: "10.96.0.80", Ports: []cluster.ServicePort{httpPort}}
	e.apply(t, marker, "pod-a1")
	e.waitAnswer(t, "pod-a1", "tcp", hostPort(marker.ClusterIP, 80), firstSync)
	cip2, np2 := e.clusterIP(t, svc), e.nodePort(t, svc, "http")
	if cip2 != cip || np2 != np {
		t.Errorf("after restart alloc has ClusterIP %s NodePort %d, want the same %s and %d as before (state dir %s: %v)",
			cip2, np2, cip, np, e.c.StateDir, e.c.StateFiles())
	}
	requireBackends(t, "alloc after restart", e.c.Request("ext", "tcp", hostPort(cluster.Node1IP, np2), 20), "pod-a2", "pod-b1")
	requireBackends(t, "web after restart", e.c.Request("pod-a1", "tcp", hostPort(webSvc.ClusterIP, 80), 40), allPods...)
}

func testCleanup(t *testing.T, e *env) {
	e.requireRunning(t)
	if err := e.proxy.Stop(); err != nil {
		t.Errorf("kproxy on SIGTERM: %v (want a clean exit)", err)
	}
	out, err := e.c.RunKproxyCleanup()
	if err != nil {
		t.Errorf("kproxy --cleanup: %v\n%s", err, out)
	}
	// Whatever the mode, nothing of any mode may remain.
	if rs := e.c.NFTListRuleset(cluster.KproxyNode); strings.Contains(rs, "kube-proxy") {
		t.Errorf("after --cleanup the nftables table remains:\n%s", rs)
	}
	dump := e.c.IPTablesSave(cluster.KproxyNode)
	if chains := cluster.KubeChains(dump); len(chains) > 0 {
		t.Errorf("after --cleanup these KUBE-* chains remain: %v\n%s", chains, dump)
	}
	if strings.Contains(dump, "KUBE-") {
		t.Errorf("after --cleanup rules still mention KUBE-:\n%s", cluster.RulesMatching(dump, "KUBE-"))
	}
	requireNoUserspaceInterface(t, e)
	for _, r := range e.c.Request("pod-a1", "tcp", hostPort(webSvc.ClusterIP, 80), 3, cluster.Timeout(500*time.Millisecond)) {
		if r.Error == "" {
			t.Errorf("web ClusterIP still answers after --cleanup: %+v", r)
		}
	}
	// A second cleanup on a clean node is harmless.
	if out, err := e.c.RunKproxyCleanup(); err != nil {
		t.Errorf("second kproxy --cleanup: %v\n%s", err, out)
	}
}
