package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/test/apiserver"
	"github.com/kproxy/kproxy/test/e2e/cluster"
	"github.com/kproxy/kproxy/test/faultproxy"
)

// apiFaultLength is how long each API server fault lasts.
const apiFaultLength = 10 * time.Second

// TestFaultAPI puts a fault-injecting proxy (test/faultproxy) between kproxy and a
// real kube-apiserver and makes the API server answer every request with 500, with
// 429, answer 5 s late, and cut the watch streams every second, each for 10 s. While
// a pod keeps connecting to a Service that never changes, every fault must leave
// that Service with no failed connection, remove no rule, and keep kproxy running;
// a Service created and another changed during the fault must be programmed once
// the API server is healthy again.
func TestFaultAPI(t *testing.T) {
	requireKproxy(t)
	bin := apiServerBinaries(t)
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) { runFaultAPI(t, bin, mode) })
	}
}

// faultAPIEnv is one mode's cluster, API server, fault proxy and kproxy.
type faultAPIEnv struct {
	*apiEnv
	fp *faultproxy.Proxy
	// steady is the unchanged Service's ClusterIP:80.
	steady string
}

func runFaultAPI(t *testing.T, bin, mode string) {
	a := newAPIEnv(t, bin)
	a.mode = mode
	applyDeploy(t, a.client)
	token := serviceAccountToken(t, a.client)
	fp, err := faultproxy.Start(faultproxy.Options{
		Listen: hostPort(cluster.APIHostIP, 0), Upstream: a.srv.URL, UpstreamCA: a.srv.CAPEM(),
		Delay: 5 * time.Second, CutEvery: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fp.Close)
	a.kubeconfig = filepath.Join(a.c.WorkDir, "kproxy-via-faultproxy.kubeconfig")
	if err := apiserver.WriteKubeconfig(a.kubeconfig, fp.URL, fp.CA, token); err != nil {
		t.Fatal(err)
	}
	t.Logf("kproxy reaches kube-apiserver %s through the fault proxy %s", a.srv.URL, fp.URL)
	a.setupCluster(t)
	a.startProxy(t)
	t.Cleanup(func() {
		if t.Failed() && mode == "nftables" {
			t.Logf("nft list ruleset of node1 at the end:\n%s", a.c.NFTListRuleset(cluster.KproxyNode))
		}
		if a.proxy != nil {
			a.proxy.Kill()
		}
	})
	a.waitProxySynced(t)

	f := &faultAPIEnv{apiEnv: a, fp: fp}
	steady := createService(t, a.client, newService("steady", v1.ServiceTypeClusterIP, apiHTTP...))
	putSlice(t, a.client, newSlice("steady", "steady-1", apiHTTP, "pod-a2", "pod-b1"))
	f.steady = hostPort(steady.Spec.ClusterIP, 80)
	waitBackends(t, a.pod, "steady", f.steady, apiFirstSync, "pod-a2", "pod-b1")
	a.forgetUnNATedFlows(t, steady.Spec.ClusterIP)
	// mutable is the Service each fault changes: its one endpoint moves to another pod.
	mutable := createService(t, a.client, newService("mutable", v1.ServiceTypeClusterIP, apiHTTP...))
	putSlice(t, a.client, newSlice("mutable", "mutable-1", apiHTTP, "pod-a1"))
	waitBackends(t, a.pod, "mutable", hostPort(mutable.Spec.ClusterIP, 80), apiPropagation, "pod-a1")

	next := []string{"pod-a2", "pod-b1", "pod-b2", "pod-a1"}
	for i, fault := range []faultproxy.Fault{faultproxy.Error500, faultproxy.TooManyRequests, faultproxy.Delay, faultproxy.CutWatches} {
		ok := t.Run(fault.String(), func(t *testing.T) {
			f.testAPIFault(t, fault, hostPort(mutable.Spec.ClusterIP, 80), next[i])
		})
		if !ok && !a.proxy.Running() {
			t.Fatalf("kproxy is gone; log %s:\n%s", a.proxy.LogPath, tail(a.proxy.Logs(), 60))
		}
		if fp.Fault() != faultproxy.Pass {
			fp.Set(faultproxy.Pass) // a failed phase must not leave its fault on
		}
	}
}

// testAPIFault runs one fault for apiFaultLength: during it a new Service is created
// and mutable's endpoint moves to mutableTo; then the API server recovers.
func (f *faultAPIEnv) testAPIFault(t *testing.T, fault faultproxy.Fault, mutable, mutableTo string) {
	a := f.apiEnv
	name := "during-" + fault.String()
	f.dumpOnFailure(t, name)
	loop := startClientLoop(t, a.c, "pod-a1", f.steady)
	loopDone := false
	finishLoop := func() (int, []string) {
		loopDone = true
		return loop.finish()
	}
	defer func() {
		if !loopDone {
			loop.finish()
		}
	}()
	before, err := kproxyRuleset(a.c, a.proxyMode(), rulesetOpts{})
	if err != nil {
		t.Fatal(err)
	}
	statsBefore := f.fp.Stats()

	f.fp.Set(fault)
	faultStart := time.Now()
	// The writes go straight to the API server, not through the proxy: only kproxy
	// meets the fault.
	created := createService(t, a.client, newService(name, v1.ServiceTypeClusterIP, apiHTTP...))
	putSlice(t, a.client, newSlice(name, name+"-1", apiHTTP, "pod-b2"))
	putSlice(t, a.client, newSlice("mutable", "mutable-1", apiHTTP, mutableTo))
	changedAt := time.Now()

	// Halfway and at the end of the fault: nothing kproxy had programmed is gone.
	// Meanwhile the new Service is probed: a fault that lets changes through (a slow
	// server, broken watches) shows when they got through.
	newTarget := hostPort(created.Spec.ClusterIP, 80)
	var answeredDuring time.Duration
	for i, at := range []string{"halfway through", "at the end of"} {
		for end := faultStart.Add(apiFaultLength * time.Duration(i+1) / 2); time.Now().Before(end); {
			if answeredDuring == 0 && a.pod.TCP(newTarget, 200*time.Millisecond).Backend == "pod-b2" {
				answeredDuring = time.Since(changedAt)
			}
			time.Sleep(min(200*time.Millisecond, time.Until(end)))
		}
		a.requireRunningDuring(t, fault)
		now, err := kproxyRuleset(a.c, a.proxyMode(), rulesetOpts{})
		if err != nil {
			t.Fatal(err)
		}
		if gone := withoutService(before, "mutable").missingFrom(now, 20); len(gone) > 0 {
			t.Errorf("%s the %s fault, %d or more rules of unchanged Services are gone:\n  %s", at, fault, len(gone), strings.Join(gone, "\n  "))
		}
	}
	stats := f.fp.Stats()
	f.fp.Set(faultproxy.Pass)
	recoveredAt := time.Now()
	injected := faultEvidence(fault, statsBefore, stats)
	if injected == "" {
		t.Errorf("the %s fault never reached kproxy (proxy stats before %+v, after %+v)", fault, statsBefore, stats)
	}

	waitBackends(t, a.pod, "Service created during the fault", newTarget, apiResume, "pod-b2")
	waitBackends(t, a.pod, "Service changed during the fault", mutable, apiResume, mutableTo)
	answeredAt := time.Now()
	recovery := answeredAt.Sub(recoveredAt)
	// Keep the loop running through the resync that follows the recovery.
	time.Sleep(2 * time.Second)
	a.requireRunningDuring(t, fault)
	answers, failures := finishLoop()
	during := "no"
	if answeredDuring > 0 {
		during = fmt.Sprintf("%.3fs", answeredDuring.Seconds())
	}
	// recover: from the fault's end until both changes answer; during: whether (and
	// how long after the writes) the new Service answered while the fault was on.
	t.Logf("FAULT case=api-%s mode=%s attempted=%d failed=%d recover=%.3fs during=%s since_change=%.3fs fault=%v injected=%q slow=%d",
		fault, a.proxyMode(), answers+len(failures), len(failures), recovery.Seconds(), during, answeredAt.Sub(changedAt).Seconds(),
		recoveredAt.Sub(faultStart).Round(time.Millisecond), injected, len(loop.slowOnes()))
	if fault == faultproxy.Error500 || fault == faultproxy.TooManyRequests {
		if answeredDuring > 0 {
			t.Errorf("the new Service answered %v into the %s fault: the fault did not hold kproxy's view back", answeredDuring, fault)
		}
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d connections to the unchanged Service %s failed during the %s fault or its recovery: %s",
			len(failures), answers+len(failures), f.steady, fault, strings.Join(failures, "; "))
	}
	if answers < 100 {
		t.Errorf("client loop made only %d connections; the %s fault was not exercised", answers, fault)
	}
}

// requireRunningDuring fails the test at once if kproxy exited during a fault.
func (a *apiEnv) requireRunningDuring(t *testing.T, fault faultproxy.Fault) {
	t.Helper()
	if !a.proxy.Running() {
		t.Fatalf("kproxy exited during the %s fault; log %s:\n%s", fault, a.proxy.LogPath, tail(a.proxy.Logs(), 60))
	}
}

// faultEvidence says what the proxy did to kproxy's requests between two Stats
// readings, or "" if it did nothing the fault stands for.
func faultEvidence(fault faultproxy.Fault, before, after faultproxy.Stats) string {
	errs, delayed, cut := after.Errors-before.Errors, after.Delayed-before.Delayed, after.CutConns-before.CutConns
	var ok bool
	switch fault {
	case faultproxy.Error500, faultproxy.TooManyRequests:
		ok = errs > 0
	case faultproxy.Delay:
		ok = delayed > 0
	case faultproxy.CutWatches:
		ok = cut > 1 // repeatedly, not only the cut on entering the fault
	}
	if !ok {
		return ""
	}
	return fmt.Sprintf("errors=%d delayed=%d cut=%d", errs, delayed, cut)
}

// withoutService drops the lines of one Service of the test namespace from a
// ruleset: the Service a fault changes on purpose loses rules legitimately. In
// iptables mode its KUBE-SVC-/KUBE-SEP- chains are named by hash, so the chains its
// commented rules jump to or live in go too.
func withoutService(rs ruleset, name string) ruleset {
	mark := ns + "/" + name
	chains := map[string]bool{}
	for _, l := range rs {
		if strings.Contains(l, mark+":") || strings.Contains(l, mark+"/") {
			for _, c := range kubeChainName.FindAllString(l, -1) {
				chains[c] = true
			}
		}
	}
	var out ruleset
	for _, l := range rs {
		if strings.Contains(l, mark+":") || strings.Contains(l, mark+"/") {
			continue
		}
		if f := strings.Fields(l); len(f) >= 3 && (chains[strings.TrimPrefix(f[1], ":")] || (f[1] == "-A" && chains[f[2]])) {
			continue
		}
		out = append(out, l)
	}
	return out
}

var kubeChainName = regexp.MustCompile(`KUBE-(?:SVC|SEP|SVL|EXT|FW)-[A-Z0-9]+`)
