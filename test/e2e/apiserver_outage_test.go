package e2e

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// apiResume bounds how long kproxy may take to notice the API server is back: the
// reflectors retry with a backoff that grows up to 30 s.
const apiResume = 90 * time.Second

// clientLoopTimeout is each connection's deadline in the client loop: long enough
// for one SYN retransmission (1 s), as any real client allows, so that a stall of
// this small shared machine is not counted as a failure; every connection slower
// than slowConn is reported separately.
const (
	clientLoopTimeout = 3 * time.Second
	slowConn          = 500 * time.Millisecond
)

// clientLoop opens one connection after another from a pod to target until stopped,
// and counts the outcomes.
type clientLoop struct {
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	answers  int
	failures []string // "time: error", in order
	slow     []string // "time: duration" of answers slower than slowConn
	// diag, if set, runs once at the first failure; its output explains it.
	diag    func() string
	diagOut string
}

func startClientLoop(t *testing.T, c *cluster.Cluster, pod, target string) *clientLoop {
	t.Helper()
	p, err := newNSProber(c.NS(pod))
	if err != nil {
		t.Fatal(err)
	}
	l := &clientLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		defer p.Close()
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			start := time.Now()
			r := p.TCP(target, clientLoopTimeout)
			took := time.Since(start)
			l.mu.Lock()
			if r.Error != "" {
				l.failures = append(l.failures, start.Format("15:04:05.000")+": "+r.Error)
				if l.diag != nil && l.diagOut == "" {
					l.diagOut = l.diag()
				}
			} else {
				l.answers++
				if took > slowConn {
					l.slow = append(l.slow, start.Format("15:04:05.000")+": "+took.Round(time.Millisecond).String())
				}
			}
			l.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return l
}

func (l *clientLoop) finish() (answers int, failures []string) {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.answers, l.failures
}

// slowOnes lists the answers that took longer than slowConn.
func (l *clientLoop) slowOnes() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.slow...)
}

// testAPIServerOutage stops the kube-apiserver for 10 s while a pod keeps opening
// connections to an existing Service: none may fail, during the outage or while the
// server and kproxy's watches come back. Afterwards a new Service must work, which
// proves the watches were re-established.
func (a *apiEnv) testAPIServerOutage(t *testing.T) {
	a.dumpOnFailure(t, "steady", "after-outage")
	svc := createService(t, a.client, newService("steady", v1.ServiceTypeClusterIP, apiHTTP...))
	putSlice(t, a.client, newSlice("steady", "steady-1", apiHTTP, "pod-a2", "pod-b1"))
	target := hostPort(svc.Spec.ClusterIP, 80)
	waitBackends(t, a.pod, "steady", target, apiPropagation, "pod-a2", "pod-b1")
	a.forgetUnNATedFlows(t, svc.Spec.ClusterIP)

	loop := startClientLoop(t, a.c, "pod-a1", target)
	loop.mu.Lock()
	loop.diag = func() string { return a.networkDiag(svc.Spec.ClusterIP) }
	loop.mu.Unlock()
	time.Sleep(time.Second)
	a.srv.Stop()
	downAt := time.Now()
	time.Sleep(10 * time.Second)
	if !a.proxy.Running() {
		loop.finish()
		t.Fatalf("kproxy exited while the API server was down:\n%s", tail(a.proxy.Logs(), 40))
	}
	if err := a.srv.Restart(); err != nil {
		loop.finish()
		t.Fatalf("restart kube-apiserver: %v", err)
	}
	t.Logf("kube-apiserver was down from %s to %s: %v (10 s stopped + restart)", downAt.Format("15:04:05.000"),
		time.Now().Format("15:04:05.000"), time.Since(downAt).Round(time.Millisecond))

	after := createService(t, a.client, newService("after-outage", v1.ServiceTypeClusterIP, apiHTTP...))
	putSlice(t, a.client, newSlice("after-outage", "after-outage-1", apiHTTP, "pod-b2"))
	took := waitBackends(t, a.pod, "Service created after the outage", hostPort(after.Spec.ClusterIP, 80), apiResume, "pod-b2")
	t.Logf("a Service created after the restart answered %v after the API server was ready again", took.Round(time.Millisecond))
	time.Sleep(2 * time.Second) // keep the loop running through the resync that follows
	answers, failures := loop.finish()
	t.Logf("client loop to the existing Service: %d answers, %d failures, %d slower than %v %v, over %v (API down for part of it)",
		answers, len(failures), len(loop.slowOnes()), slowConn, loop.slowOnes(), time.Since(downAt).Round(time.Second))
	if len(failures) > 0 {
		t.Errorf("%d connections to %s failed during the outage or the recovery: %s", len(failures), target, strings.Join(failures, "; "))
		loop.mu.Lock()
		t.Logf("state at the first failure:\n%s", loop.diagOut)
		loop.mu.Unlock()
	}
	if answers < 100 {
		t.Errorf("client loop made only %d connections; the test did not exercise the outage", answers)
	}
}

// testStartWhileAPIServerDown restarts kproxy while the API server is down: kproxy
// keeps retrying, flushes nothing (the rules of the previous run keep serving), and
// syncs once the server is back.
func (a *apiEnv) testStartWhileAPIServerDown(t *testing.T) {
	a.dumpOnFailure(t, "steady", "after-restart")
	ctx, cancel := apiCtx()
	steady, err := a.client.CoreV1().Services(ns).Get(ctx, "steady", metav1.GetOptions{})
	cancel()
	if err != nil {
		t.Fatalf("Service steady from the outage test: %v", err)
	}
	target := hostPort(steady.Spec.ClusterIP, 80)
	chainsBefore := cluster.KubeChains(a.c.IPTablesSave(cluster.KproxyNode))

	if err := a.proxy.Stop(); err != nil {
		t.Fatalf("stop kproxy: %v", err)
	}
	a.srv.Stop()
	a.startProxy(t)
	loop := startClientLoop(t, a.c, "pod-a1", target)
	time.Sleep(8 * time.Second)
	answers, failures := loop.finish()
	if !a.proxy.Running() {
		t.Fatalf("kproxy exited while the API server was unreachable:\n%s", tail(a.proxy.Logs(), 40))
	}
	if len(failures) > 0 || answers == 0 {
		t.Errorf("existing Service while kproxy started without an API server: %d answers, failures %v", answers, failures)
	}
	t.Logf("client loop while kproxy started without an API server: %d answers, %d failures, slow %v", answers, len(failures), loop.slowOnes())
	if after := cluster.KubeChains(a.c.IPTablesSave(cluster.KproxyNode)); !reflect.DeepEqual(after, chainsBefore) {
		t.Errorf("kproxy changed the rules before its first sync:\nbefore %v\nafter  %v", chainsBefore, after)
	}
	code, body, err := a.node.HTTPStatus("127.0.0.1:10256", "/healthz", 2*time.Second)
	t.Logf("HEALTHZ_BEFORE_SYNC code=%d err=%v body=%s", code, err, body)
	if !strings.Contains(a.proxy.Logs(), "Waiting for caches to sync") {
		t.Errorf("kproxy's log does not say it waits for the API server")
	}

	if err := a.srv.Restart(); err != nil {
		t.Fatalf("restart kube-apiserver: %v", err)
	}
	svc := createService(t, a.client, newService("after-restart", v1.ServiceTypeClusterIP, apiHTTP...))
	putSlice(t, a.client, newSlice("after-restart", "after-restart-1", apiHTTP, "pod-a1"))
	took := waitBackends(t, a.pod, "Service created once the API server was back", hostPort(svc.Spec.ClusterIP, 80), apiResume, "pod-a1")
	t.Logf("kproxy synced and programmed a new Service %v after the API server came back", took.Round(time.Millisecond))
	err = cluster.WaitFor(func() error {
		code, body, err := a.node.HTTPStatus("127.0.0.1:10256", "/healthz", 2*time.Second)
		if err != nil {
			return fmt.Errorf("healthz: %w", err)
		}
		if code != 200 {
			return fmt.Errorf("healthz %d %s", code, body)
		}
		return nil
	}, 10*time.Second)
	if err != nil {
		t.Errorf("kproxy not healthy after its first sync: %v", err)
	}
}

// forgetUnNATedFlows waits until node1 holds no conntrack entry to ip that was never
// DNATed. waitBackends' first probes from pod-a1 went out before kproxy programmed ip
// and left SYN_SENT [UNREPLIED] entries whose reply source is ip itself; they live
// 120 s, and since NAT is decided on a connection's first packet, a later SYN reusing
// one of those source ports would bypass the rules ("unreachable"). The client loops
// that follow walk the whole ephemeral port range within that lifetime. kproxy deletes
// such entries when an address gets rules (upstream leaves them), so this asserts it.
func (a *apiEnv) forgetUnNATedFlows(t *testing.T, ip string) {
	t.Helper()
	var out string
	err := a.c.WaitFor(func() error {
		out, _ = a.c.Exec(cluster.KproxyNode, "conntrack", "-L", "-p", "tcp", "--orig-dst", ip, "--reply-src", ip)
		if m := unNATedShown.FindStringSubmatch(out); m == nil || m[1] != "0" {
			return fmt.Errorf("entries to %s without DNAT remain", ip)
		}
		return nil
	}, 5*time.Second)
	if err != nil {
		t.Fatalf("kproxy did not delete node1's conntrack entries to %s made before its rules: %v\n%s", ip, err, out)
	}
	t.Logf("no conntrack entry to %s without DNAT is left (kproxy deleted those of the early probes)", ip)
}

var unNATedShown = regexp.MustCompile(`(\d+) flow entries have been shown`)

// networkDiag captures what can explain a failed connection to ip: node1's NAT rules
// for it, the neighbour tables on the way, and conntrack's entries for it.
func (a *apiEnv) networkDiag(ip string) string {
	var b strings.Builder
	for _, cmd := range [][]string{
		{cluster.KproxyNode, "iptables-save", "-t", "nat"},
		{cluster.KproxyNode, "ip", "neigh", "show"},
		{"pod-a1", "ip", "neigh", "show"},
		{cluster.KproxyNode, "conntrack", "-L", "-d", ip},
	} {
		out, err := a.c.Exec(cmd[0], cmd[1:]...)
		if cmd[1] == "iptables-save" {
			out = cluster.RulesMatching(out, ip)
		}
		if cmd[1] == "conntrack" {
			var keep []string
			for _, l := range strings.Split(out, "\n") {
				if !strings.Contains(l, "ESTABLISHED") && !strings.Contains(l, "TIME_WAIT") {
					keep = append(keep, l)
				}
			}
			out = fmt.Sprintf("(%d lines; not ESTABLISHED/TIME_WAIT:)\n%s", len(strings.Split(out, "\n")), strings.Join(keep, "\n"))
		}
		fmt.Fprintf(&b, "$ %s (%s) err=%v\n%s\n", strings.Join(cmd[1:], " "), cmd[0], err, out)
	}
	return b.String()
}
