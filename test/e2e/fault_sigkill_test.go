package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// sigkillServices is how many Services kproxy programs when it is killed.
const sigkillServices = 5000

// converge bounds a restarted kproxy's way back to the desired rules at 5,000
// Services: start-up, manifest decoding and one full sync, on a loaded machine.
var converge = scaled(3 * time.Minute)

// TestFaultSIGKILLMidSync SIGKILLs kproxy (and the iptables-restore or nft it runs,
// as killing the container's cgroup would) in the middle of its first sync of 5,000
// Services, and again in the middle of a change that deletes 2,500 of them and adds
// 2,500 others, restarts it each time, and requires the ruleset to become exactly
// what a clean start (after kproxy --cleanup) programs for the same manifests: no
// leftover and no duplicate rule, chain or element. A client loop to an unchanged
// Service runs through the second kill.
func TestFaultSIGKILLMidSync(t *testing.T) {
	requireKproxy(t)
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) { runSIGKILLMidSync(t, mode) })
	}
}

// bulkRange is the bulk Services [from, to).
type bulkRange struct{ from, to int }

// bulkService is Service i of the bulk manifest: bulk-NNNN at 10.96.(10+i/250).(1+i%250)
// with two endpoints, so it has a KUBE-SVC- chain and two KUBE-SEP- chains (or
// their nftables counterparts).
func bulkService(i int) (cluster.Service, []string) {
	svc := cluster.Service{Namespace: ns, Name: fmt.Sprintf("bulk-%04d", i),
		ClusterIP: fmt.Sprintf("10.96.%d.%d", 10+i/250, 1+i%250), Ports: []cluster.ServicePort{httpPort}}
	return svc, []string{allPods[i%len(allPods)], allPods[(i+1)%len(allPods)]}
}

// manifest is the one file of the range's Services and EndpointSlices.
func (r bulkRange) manifest() string {
	docs := make([]string, 0, 2*(r.to-r.from))
	for i := r.from; i < r.to; i++ {
		svc, pods := bulkService(i)
		docs = append(docs, svc.YAML(), slice(svc, pods...).YAML())
	}
	return cluster.Documents(docs...)
}

// requireSample fails unless a sample of the range's Services (the first, the last
// and some between) answer from exactly their two endpoints.
func (e *env) requireSample(t *testing.T, r bulkRange) {
	t.Helper()
	if err := e.sampleAnswers(r); err != nil {
		t.Error(err)
	}
}

func (e *env) sampleAnswers(r bulkRange) error {
	for _, i := range []int{r.from, r.to - 1, (r.from + r.to) / 2, r.from + 1, r.to - 2, r.from + (r.to-r.from)/4} {
		svc, pods := bulkService(i)
		// 24 connections: both endpoints (one half of the connections each) answer
		// unless the balance is broken, but for a chance of 2^-23.
		replies := e.c.Request("pod-a2", "tcp", hostPort(svc.ClusterIP, 80), 24, cluster.Timeout(time.Second))
		got := cluster.Spread(replies)
		if len(cluster.Errors(replies)) > 0 || len(got) != 2 || got[pods[0]] == 0 || got[pods[1]] == 0 {
			return fmt.Errorf("%s/%s: want answers from exactly %v; %s", ns, svc.Name, pods, cluster.Summary(replies))
		}
	}
	return nil
}

// cleanStart is the reference: kproxy started on a node that `kproxy --cleanup`
// emptied, with r's manifest (and the steady Service), until its rules settle. It
// returns those rules and stops kproxy and cleans the node again.
func (e *env) cleanStart(t *testing.T, r bulkRange) ruleset {
	t.Helper()
	e.stopAndCleanup(t)
	if err := e.c.WriteManifest("bulk", r.manifest()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.startProxy(t)
	var answered time.Duration
	var prev, cur ruleset
	err := e.c.WaitFor(func() error {
		if err := e.requireUp(); err != nil {
			return err
		}
		if answered == 0 {
			if err := e.sampleAnswers(r); err != nil {
				return err
			}
			answered = time.Since(start)
		}
		// Settled: two readings a second apart are the same.
		time.Sleep(time.Second)
		var err error
		prev, cur = cur, nil
		if cur, err = kproxyRuleset(e.c, e.mode, rulesetOpts{ordered: true}); err != nil {
			return err
		}
		if prev == nil || !prev.equal(cur) {
			return fmt.Errorf("the ruleset still changes (%d lines)", len(cur))
		}
		return nil
	}, converge)
	if err != nil {
		t.Fatalf("clean start with bulk Services %d-%d: %v", r.from, r.to-1, err)
	}
	t.Logf("clean start with %d Services: a sample answered %.3fs after the start; ruleset of %d lines",
		r.to-r.from, answered.Seconds(), len(cur))
	e.stopAndCleanup(t)
	return cur
}

// requireUp is an error once kproxy has exited.
func (e *env) requireUp() error {
	if !e.proxy.Running() {
		return fmt.Errorf("kproxy exited: %w", e.proxy.Exited())
	}
	return nil
}

// stopAndCleanup stops kproxy (if it runs) and runs kproxy --cleanup, which must
// leave nothing of kproxy's: the next start is then a first start.
func (e *env) stopAndCleanup(t *testing.T) {
	t.Helper()
	if e.proxy != nil && e.proxy.Running() {
		if err := e.proxy.Stop(); err != nil {
			t.Fatalf("kproxy on SIGTERM: %v", err)
		}
	}
	if out, err := e.c.RunKproxyCleanup(); err != nil {
		t.Fatalf("kproxy --cleanup: %v\n%s", err, out)
	}
	if got := e.programmed(t); len(got) > 0 {
		t.Fatalf("after kproxy --cleanup %d bulk Services still have rules", len(got))
	}
}

var (
	iptablesBulkRule = regexp.MustCompile(`"?` + ns + `/bulk-(\d+):http cluster IP"?`)
	nftBulkElement   = regexp.MustCompile(ns + `/bulk-(\d+)/tcp/http`)
)

// programmed is the set of bulk Services the kernel has ClusterIP rules for (the
// nat ClusterIP rule in iptables mode, the service-ips element in nftables mode).
func (e *env) programmed(t *testing.T) map[int]bool {
	t.Helper()
	var out string
	re := iptablesBulkRule
	if e.mode == "nftables" {
		re = nftBulkElement
		var err error
		if out, err = e.c.Exec(cluster.KproxyNode, "nft", "list", "map", "ip", "kube-proxy", "service-ips"); err != nil {
			out = "" // no table (or no map) yet: nothing programmed
		}
	} else {
		out, _ = e.c.Exec(cluster.KproxyNode, "iptables-save", "-t", "nat")
	}
	got := map[int]bool{}
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		got[n] = true
	}
	return got
}

// countIn is how many of the indices lie in r.
func countIn(set map[int]bool, r bulkRange) int {
	n := 0
	for i := range set {
		if i >= r.from && i < r.to {
			n++
		}
	}
	return n
}

// convergeTo waits until node1's rules are exactly want and a sample of r answers.
// It returns how long that took (exact), and how long until exactly r's Services
// had ClusterIP rules (serving), which comes first when the restart left chains to
// retire: kproxy flushes them at once and deletes them in a later sync.
func (e *env) convergeTo(t *testing.T, want ruleset, r bulkRange) (exact, serving time.Duration) {
	t.Helper()
	start := time.Now()
	var cur ruleset
	err := e.c.WaitFor(func() error {
		if err := e.requireUp(); err != nil {
			return err
		}
		var err error
		if cur, err = kproxyRuleset(e.c, e.mode, rulesetOpts{ordered: true}); err != nil {
			return err
		}
		if serving == 0 {
			if got := e.programmed(t); len(got) == r.to-r.from && countIn(got, r) == len(got) {
				serving = time.Since(start)
			}
		}
		if !cur.equal(want) {
			time.Sleep(500 * time.Millisecond)
			return fmt.Errorf("ruleset differs from the clean start's")
		}
		return nil
	}, converge)
	exact = time.Since(start)
	if err != nil {
		t.Fatalf("kproxy did not converge to the clean start's rules: %v\n%s", err, describeDiff("after the restart", cur, "clean start", want))
	}
	if serving == 0 {
		serving = exact
	}
	e.requireSample(t, r)
	return exact, serving
}

func runSIGKILLMidSync(t *testing.T, mode string) {
	c := newCluster(t)
	e := &env{c: c, mode: mode}
	if err := c.WriteManifest("nodes", nodesYAML()); err != nil {
		t.Fatal(err)
	}
	steady := cluster.Service{Namespace: ns, Name: "steady", ClusterIP: "10.96.0.10", Ports: []cluster.ServicePort{httpPort}}
	e.apply(t, steady, "pod-a1", "pod-b1")
	t.Cleanup(func() {
		if e.proxy != nil {
			e.proxy.Kill()
		}
	})
	e.dumpOnFailure(t, "steady")
	first := bulkRange{0, sigkillServices}
	// The later change: the first half deleted, as many new Services added.
	changed := bulkRange{sigkillServices / 2, sigkillServices * 3 / 2}
	refFirst := e.cleanStart(t, first)
	refChanged := e.cleanStart(t, changed)

	// Each kill point in turn: while the rule writer runs (an iptables restore or
	// nft, whose input may still be streaming), and just after it exited (in
	// nftables mode kproxy then writes the set and map elements over netlink; in
	// iptables mode it has not yet recorded the sync).
	for _, point := range []killPoint{whileWriting, afterWriter} {
		ok := t.Run("FirstSync/"+point.String(), func(t *testing.T) {
			e.stopAndCleanup(t)
			if err := c.WriteManifest("bulk", first.manifest()); err != nil {
				t.Fatal(err)
			}
			e.startProxy(t)
			e.killAndConverge(t, point, bulkRange{}, first, refFirst, nil, "sigkill-first-sync-"+point.String())
		})
		if !ok {
			return
		}
	}
	// kproxy now runs with the first range programmed. The large changes go from it
	// to the changed range and back, each deleting half of the Services and adding
	// as many, with a client loop to the unchanged Service throughout.
	steps := []struct {
		point    killPoint
		from, to bulkRange
		ref      ruleset
	}{{whileWriting, first, changed, refChanged}, {afterWriter, changed, first, refFirst}}
	for _, st := range steps {
		ok := t.Run("LargeChange/"+st.point.String(), func(t *testing.T) {
			loop := startClientLoop(t, c, "pod-a2", hostPort(steady.ClusterIP, 80))
			if err := c.WriteManifest("bulk", st.to.manifest()); err != nil {
				loop.finish()
				t.Fatal(err)
			}
			e.killAndConverge(t, st.point, st.from, st.to, st.ref, loop, "sigkill-large-change-"+st.point.String())
		})
		if !ok {
			return
		}
	}
}

// killAndConverge kills kproxy at point while it moves the kernel from the Services
// of before to those of r, reports what the kernel holds then, restarts kproxy and
// waits for it to converge to ref. loop, if set, is the client loop to the
// unchanged Service, which must not have failed.
func (e *env) killAndConverge(t *testing.T, point killPoint, before, r bulkRange, ref ruleset, loop *clientLoop, name string) {
	t.Helper()
	pid := e.proxy.Pid()
	rep, err := killMidSync(e.proxy, point, converge)
	if err != nil {
		if loop != nil {
			loop.finish()
		}
		t.Fatal(err)
	}
	got := e.programmed(t)
	in := countIn(got, r)
	// How much of the ruleset exists at the kill (a table without its elements has
	// no Service programmed yet, but most of its lines).
	atKill, err := kproxyRuleset(e.c, e.mode, rulesetOpts{})
	if err != nil {
		atKill = nil // no table at all
	}
	stale := len(got) - in // programmed, but not wanted any more
	landed := landedShare(got, before, r)
	t.Logf("kproxy (pid %d) killed %.3fs after the watch began, %s (%d children killed too): the kernel holds %d of the %d wanted Services and %d unwanted; the change landed: %s",
		pid, rep.afterRun.Seconds(), rep.writer, len(rep.killed), in, r.to-r.from, stale, landed)
	e.startProxy(t)
	took, serving := e.convergeTo(t, ref, r)
	attempted, failed, slow := 0, 0, 0
	if loop != nil {
		time.Sleep(time.Second) // the loop runs on past the convergence
		answers, failures := loop.finish()
		attempted, failed, slow = answers+len(failures), len(failures), len(loop.slowOnes())
		if failed > 0 {
			t.Errorf("%d of %d connections to the unchanged Service failed across the kill and the restart: %s",
				failed, attempted, strings.Join(failures, "; "))
		}
		if answers < 100 {
			t.Errorf("client loop made only %d connections", answers)
		}
	}
	// recover: from the restart until the ruleset equals the clean start's;
	// serving: until exactly the wanted Services had ClusterIP rules.
	t.Logf("FAULT case=%s mode=%s attempted=%d failed=%d recover=%.3fs serving=%.3fs killed_at=%.3fs programmed_at_kill=%d/%d stale_at_kill=%d rules_at_kill=%d/%d landed=%s slow=%d writer=%q",
		name, e.mode, attempted, failed, took.Seconds(), serving.Seconds(), rep.afterRun.Seconds(), in, r.to-r.from, stale, len(atKill), len(ref), landed, slow, rep.writer)
}

// landedShare says how much of the move from before's Services to r's the kernel
// shows: "none", "all" or "partial".
func landedShare(got map[int]bool, before, r bulkRange) string {
	is := func(want bulkRange) bool { return len(got) == want.to-want.from && countIn(got, want) == len(got) }
	switch {
	case is(before):
		return "none"
	case is(r):
		return "all"
	}
	return "partial"
}
