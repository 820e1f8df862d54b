package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// ns is the Kubernetes namespace of every test Service.
const ns = "e2e"

// firstSync bounds how long kproxy may take from start to its first programmed rules;
// propagation bounds a manifest change reaching the kernel (the brief promises 1 s).
// Both are stretched by KPROXY_E2E_TIME_SCALE (see scaled).
var (
	firstSync   = scaled(15 * time.Second)
	propagation = scaled(1 * time.Second)
)

// timeScale is KPROXY_E2E_TIME_SCALE (default 1): how much slower than a real machine
// the one running the suite is. hack/test-ipvs.sh sets it in its qemu guest, whose
// CPU and kernel are software-emulated (every exec and packet costs several times
// more there). It stretches how long a case may wait, never what it asserts.
var timeScale = func() float64 {
	v := os.Getenv("KPROXY_E2E_TIME_SCALE")
	if v == "" {
		return 1
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 1 {
		panic(fmt.Sprintf("KPROXY_E2E_TIME_SCALE=%q: want a number >= 1", v))
	}
	return f
}()

// scaled is a wait or latency bound stretched by timeScale; d itself when it is 1.
func scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * timeScale)
}

// node1Addrs are the addresses a packet masqueraded by node1 can carry: its LAN
// address, or the pod-veth gateway address when the endpoint is a local pod.
var node1Addrs = map[string]bool{cluster.Node1IP: true, cluster.Node1PodGW: true}

// env is the cluster and the kproxy process that the subtests of TestKproxy share.
type env struct {
	c     *cluster.Cluster
	proxy *cluster.Process
	// mode is kproxy's --proxy-mode for this run of the suite.
	mode string
}

// modes are the proxy modes every case runs in; KPROXY_E2E_MODES narrows them
// (comma-separated) when debugging one mode.
func modes() []string {
	if m := os.Getenv("KPROXY_E2E_MODES"); m != "" {
		return strings.Split(m, ",")
	}
	return []string{"iptables", "nftables"}
}

// proxyModes are the modes TestKproxy's cases run in: every mode this kernel can run.
// The userspace proxy joins here; the semantics and operability suites assert kernel
// behaviour (preserved sources, DROP versus REJECT) that only netfilter modes have,
// so they use modes(). IPVS runs in its own qemu guest (hack/test-ipvs.sh).
func proxyModes() []string {
	if m := os.Getenv("KPROXY_E2E_MODES"); m != "" {
		return strings.Split(m, ",")
	}
	return append(modes(), "userspace")
}

func (e *env) startProxy(t *testing.T, args ...string) {
	t.Helper()
	mode := []string{"--proxy-mode", e.mode}
	if e.mode == "ipvs" {
		// ipvs mode takes its periods from the ipvs flags (default minimum 1 s).
		mode = append(mode, "--ipvs-min-sync-period", "100ms")
	}
	p, err := e.c.StartKproxy(append(mode, args...)...)
	if err != nil {
		t.Fatalf("start kproxy: %v", err)
	}
	e.proxy = p
	keepLog(t, p.LogPath)
}

// keepLog copies a kproxy log into KPROXY_E2E_LOG_DIR, when set, once t ends: the
// qemu guest's work dirs vanish with it, passed or not.
func keepLog(t *testing.T, path string) {
	dir := os.Getenv("KPROXY_E2E_LOG_DIR")
	if dir == "" {
		return
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(path); err == nil {
			_ = os.WriteFile(filepath.Join(dir, filepath.Base(path)), b, 0o644)
		}
	})
}

// requireRunning fails the test at once if kproxy has exited.
func (e *env) requireRunning(t *testing.T) {
	t.Helper()
	if e.proxy == nil || !e.proxy.Running() {
		t.Fatalf("kproxy is not running; log %s:\n%s", e.proxy.LogPath, tail(e.proxy.Logs(), 60))
	}
}

// dumpOnFailure logs, when t failed, the iptables rules that mention the given
// services, so a failure shows what kproxy programmed for them.
func (e *env) dumpOnFailure(t *testing.T, services ...string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		if e.mode == "ipvs" {
			t.Logf("IPVS state of node1:\n%s", ipvsDump(e))
		}
		if e.mode == "nftables" {
			t.Logf("nft list ruleset of node1:\n%s", e.c.NFTListRuleset(cluster.KproxyNode))
		} else if e.userspace() {
			t.Logf("userspace mode: addresses and listening sockets of node1:\n%s", userspaceDump(e))
		} else {
			dump := e.c.IPTablesSave(cluster.KproxyNode)
			for _, s := range services {
				t.Logf("iptables-save -c of node1, lines mentioning %s/%s:\n%s", ns, s, cluster.RulesMatching(dump, ns+"/"+s))
			}
		}
		if e.proxy != nil {
			t.Logf("kproxy log %s (tail):\n%s", e.proxy.LogPath, tail(e.proxy.Logs(), 40))
		}
	})
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// httpPort and dnsPort are the two ports most test Services expose.
var (
	httpPort = cluster.ServicePort{Name: "http", Port: 80}
	dnsPort  = cluster.ServicePort{Name: "dns", Protocol: "UDP", Port: 53}
)

// slice builds the EndpointSlice that serves every port of svc from the named pods.
func slice(svc cluster.Service, pods ...string) cluster.EndpointSlice {
	s := cluster.EndpointSlice{Namespace: svc.Namespace, Service: svc.Name, Endpoints: cluster.PodEndpoints(pods...)}
	for _, p := range svc.Ports {
		target := p.TargetPort
		if target == 0 {
			target = p.Port
		}
		s.Ports = append(s.Ports, cluster.SlicePort{Name: p.Name, Protocol: p.Protocol, Port: target})
	}
	return s
}

// apply writes the Service and (if pods are given) its EndpointSlice as two files.
func (e *env) apply(t *testing.T, svc cluster.Service, pods ...string) {
	t.Helper()
	if err := e.c.WriteManifest("svc-"+svc.Name, svc.YAML()); err != nil {
		t.Fatal(err)
	}
	if len(pods) > 0 {
		e.setEndpoints(t, svc, pods...)
	}
}

// setEndpoints rewrites the Service's EndpointSlice file.
func (e *env) setEndpoints(t *testing.T, svc cluster.Service, pods ...string) {
	t.Helper()
	if err := e.c.WriteManifest("eps-"+svc.Name, slice(svc, pods...).YAML()); err != nil {
		t.Fatal(err)
	}
}

// clusterIP is the Service's ClusterIP: the one in its manifest, or the one kproxy
// allocated (read from its state directory, the same in every mode).
func (e *env) clusterIP(t *testing.T, svc cluster.Service) string {
	t.Helper()
	if svc.ClusterIP != "" {
		return svc.ClusterIP
	}
	ip, err := e.c.WaitAllocatedIP(svc.Namespace+"/"+svc.Name, firstSync)
	if err != nil {
		t.Fatalf("allocated ClusterIP of %s: %v", svc.PortName(""), err)
	}
	return ip
}

// nodePort is the NodePort kproxy allocated to the named port of svc.
func (e *env) nodePort(t *testing.T, svc cluster.Service, port string) int {
	t.Helper()
	for _, p := range svc.Ports {
		if p.Name != port {
			continue
		}
		if p.NodePort != 0 {
			return int(p.NodePort)
		}
		proto := p.Protocol
		if proto == "" {
			proto = "TCP"
		}
		np, err := e.c.WaitAllocatedNodePort(svc.Namespace+"/"+svc.Name, fmt.Sprintf("%s/%d", proto, p.Port), firstSync)
		if err != nil {
			t.Fatalf("NodePort of %s: %v", svc.PortName(port), err)
		}
		return np
	}
	t.Fatalf("%s has no port named %q", svc.PortName(""), port)
	return 0
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

// waitAnswer waits until one request from ns to target gets an answer and returns how
// long that took.
func (e *env) waitAnswer(t *testing.T, from, proto, target string, timeout time.Duration) time.Duration {
	t.Helper()
	if timeout != firstSync { // firstSync is scaled already
		timeout = scaled(timeout)
	}
	start := time.Now()
	err := e.c.WaitFor(func() error {
		r := e.c.Request(from, proto, target, 1, cluster.Timeout(300*time.Millisecond))[0]
		if r.Error != "" {
			return fmt.Errorf("%s -> %s/%s: %s", from, proto, target, r.Error)
		}
		return nil
	}, timeout)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return time.Since(start)
}

// requireAll fails unless every reply is an answer.
func requireAll(t *testing.T, what string, replies []cluster.Reply) {
	t.Helper()
	if errs := cluster.Errors(replies); len(errs) > 0 {
		t.Fatalf("%s: %d of %d requests failed: %s", what, len(replies)-sum(cluster.Spread(replies)), len(replies), cluster.Summary(replies))
	}
}

// requireBackends fails unless exactly the named backends answered.
func requireBackends(t *testing.T, what string, replies []cluster.Reply, want ...string) {
	t.Helper()
	got := cluster.Spread(replies)
	ok := len(got) == len(want)
	for _, w := range want {
		if got[w] == 0 {
			ok = false
		}
	}
	if !ok {
		t.Errorf("%s: want answers from exactly %v; %s", what, want, cluster.Summary(replies))
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

var allPods = []string{"pod-a1", "pod-a2", "pod-b1", "pod-b2"}

// nodesYAML is the manifest of the cluster's two Nodes with their pod CIDRs.
func nodesYAML() string {
	return cluster.Documents(
		cluster.NodeYAML("node1", cluster.Node1IP, "10.244.1.0/24"),
		cluster.NodeYAML("node2", cluster.Node2IP, "10.244.2.0/24"),
	)
}
