package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// TestFaultKernel runs the fault cases on the kernel's side, in every netfilter mode,
// each on its own cluster and kproxy: another program holding the xtables lock,
// another agent editing kproxy's rules, a full conntrack table. In each a pod keeps
// connecting to a Service that the case never changes (faultEnv's steady Service),
// and the case reports the connections it made and lost in a "FAULT" line that
// docs/reliability.md collects.
func TestFaultKernel(t *testing.T) {
	requireKproxy(t)
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			t.Run("XtablesLockHeld", func(t *testing.T) { testXtablesLockHeld(t, mode) })
			t.Run("ForeignRuleEdits", func(t *testing.T) { testForeignRuleEdits(t, mode) })
			t.Run("ConntrackTableFull", func(t *testing.T) { testConntrackTableFull(t, mode) })
		})
	}
}

// faultEnv is a cluster with kproxy running and a steady Service (two endpoints, one
// per node) that answers.
type faultEnv struct {
	*env
	steady cluster.Service
	target string // the steady Service's ClusterIP:80
}

// faultSyncPeriod is kproxy's --iptables-sync-period in the fault cases (it drives
// nftables mode too): the periodic full sync is what repairs edits that no flush
// check notices, so a short one keeps the cases short.
const faultSyncPeriod = 3 * time.Second

// newFaultEnv builds the cluster, runs prepare (if any) before kproxy starts, then
// starts kproxy with the fault flags and waits for the steady Service.
func newFaultEnv(t *testing.T, mode string, prepare func(c *cluster.Cluster), flags ...string) *faultEnv {
	t.Helper()
	c := newCluster(t)
	e := &env{c: c, mode: mode}
	if err := c.WriteManifest("nodes", nodesYAML()); err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(c)
	}
	e.startProxy(t, append([]string{"--iptables-sync-period", faultSyncPeriod.String()}, flags...)...)
	t.Cleanup(func() {
		if e.proxy != nil {
			e.proxy.Kill()
		}
	})
	f := &faultEnv{env: e, steady: cluster.Service{Namespace: ns, Name: "steady", ClusterIP: "10.96.0.50", Ports: []cluster.ServicePort{httpPort}}}
	f.target = hostPort(f.steady.ClusterIP, 80)
	e.apply(t, f.steady, "pod-a2", "pod-b1")
	e.waitAnswer(t, "pod-a1", "tcp", f.target, firstSync)
	return f
}

// faultReport ends the client loop, logs the case's FAULT line and fails on any
// failed connection when failuresAllowed is false.
func faultReport(t *testing.T, name, mode string, loop *clientLoop, recovery time.Duration, failuresAllowed bool) {
	t.Helper()
	answers, failures := loop.finish()
	t.Logf("FAULT case=%s mode=%s attempted=%d failed=%d recover=%v slow=%d",
		name, mode, answers+len(failures), len(failures), recovery.Round(time.Millisecond), len(loop.slowOnes()))
	if !failuresAllowed && len(failures) > 0 {
		t.Errorf("%d connections to the unchanged Service failed: %s", len(failures), strings.Join(failures, "; "))
	}
	if answers < 50 {
		t.Errorf("the client loop made only %d connections: the case did not exercise the fault", answers)
	}
}

// metricTotal sums every sample of the named metric (all label sets).
func metricTotal(m metricsDump, name string) float64 {
	var total float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			total += v
		}
	}
	return total
}

// syncFailures is the mode's count of failed syncs: iptables mode, as upstream,
// counts failed full and failed partial restores in two metrics.
func syncFailures(m metricsDump, mode string) float64 {
	if mode == "nftables" {
		return metricTotal(m, "kubeproxy_sync_proxy_rules_nftables_sync_failures_total")
	}
	return metricTotal(m, "kubeproxy_sync_proxy_rules_iptables_restore_failures_total") +
		metricTotal(m, "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total")
}

// testXtablesLockHeld holds the xtables lock for 10 s while Services change. In
// iptables mode kproxy is made to use iptables-legacy (the flavour that takes the
// lock: iptables-nft ignores it) by the hint chain kubelet leaves, and its lock file
// is a private one (XTABLES_LOCKFILE), so the case blocks nobody else on the machine.
// kproxy must not program anything while the lock is held (which proves the fault was
// real), must count and log the failed restores, and must program every change within
// a few seconds of the lock's release. nftables mode takes no such lock: its changes
// must be programmed while the lock is held.
func testXtablesLockHeld(t *testing.T, mode string) {
	lockPath := filepath.Join(t.TempDir(), "xtables.lock")
	t.Setenv("XTABLES_LOCKFILE", lockPath)
	f := newFaultEnv(t, mode, func(c *cluster.Cluster) {
		if mode != "iptables" {
			return
		}
		if _, err := c.Exec(cluster.KproxyNode, "iptables-legacy", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"); err != nil {
			t.Fatalf("create kubelet's hint chain in iptables-legacy: %v", err)
		}
	})
	e := f.env
	e.dumpOnFailure(t, "steady", "moving", "during-lock")
	if mode == "iptables" && !strings.Contains(e.proxy.Logs(), `flavour="legacy"`) {
		t.Fatalf("kproxy did not pick iptables-legacy despite the hint chain; log:\n%s", tail(e.proxy.Logs(), 30))
	}
	moving := cluster.Service{Namespace: ns, Name: "moving", ClusterIP: "10.96.0.52", Ports: []cluster.ServicePort{httpPort}}
	e.apply(t, moving, "pod-a2")
	e.waitAnswer(t, "pod-a1", "tcp", hostPort(moving.ClusterIP, 80), firstSync)
	failuresBefore := syncFailures(scrapeMetrics(t, e.c), mode)

	loop := startClientLoop(t, e.c, "pod-a1", f.target)
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Close() }()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("take the xtables lock: %v", err)
	}
	held := time.Now()
	released := false
	release := func() {
		if !released {
			_ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
			released = true
		}
	}
	defer release()

	during := cluster.Service{Namespace: ns, Name: "during-lock", ClusterIP: "10.96.0.53", Ports: []cluster.ServicePort{httpPort}}
	e.apply(t, during, "pod-b2")
	e.setEndpoints(t, moving, "pod-b2")
	duringTarget := hostPort(during.ClusterIP, 80)

	if mode == "iptables" {
		// The first restore gives up after its 5 s wait (-w 5): the failure counter
		// moves while the lock is still held, and nothing new is programmed.
		err := e.c.WaitFor(func() error {
			if n := syncFailures(scrapeMetrics(t, e.c), mode); n <= failuresBefore {
				return fmt.Errorf("the failed restore metrics still sum to %v", n)
			}
			return nil
		}, 9*time.Second)
		if err != nil {
			t.Fatalf("no failed restore counted while the lock was held: %v\n%s", err, tail(e.proxy.Logs(), 20))
		}
		if r := e.c.Request("pod-a1", "tcp", duringTarget, 1, cluster.Timeout(300*time.Millisecond))[0]; r.Error == "" {
			t.Fatalf("a Service created while the lock was held answered (from %s): the lock did not block kproxy", r.Backend)
		}
		if !strings.Contains(e.proxy.Logs(), "holding the xtables lock") {
			t.Errorf("kproxy's log does not say another program holds the xtables lock:\n%s", tail(e.proxy.Logs(), 20))
		}
	} else {
		took := e.waitAnswer(t, "pod-a1", "tcp", duringTarget, 5*time.Second)
		t.Logf("nftables mode programmed a new Service %v after it was written, with the xtables lock held", took.Round(time.Millisecond))
	}
	// The fault lasts 10 s in all, whatever happened above.
	time.Sleep(time.Until(held.Add(10 * time.Second)))
	release()
	freed := time.Now()

	err = e.c.WaitFor(func() error {
		if r := e.c.Request("pod-a1", "tcp", duringTarget, 1, cluster.Timeout(300*time.Millisecond))[0]; r.Error != "" {
			return fmt.Errorf("during-lock: %s", r.Error)
		}
		replies := e.c.Request("pod-a1", "tcp", hostPort(moving.ClusterIP, 80), 6, cluster.Timeout(300*time.Millisecond))
		if got := cluster.Spread(replies); len(got) != 1 || got["pod-b2"] != len(replies) {
			return fmt.Errorf("moving: %s", cluster.Summary(replies))
		}
		return nil
	}, scaled(10*time.Second))
	recovery := time.Since(freed)
	if err != nil {
		t.Errorf("changes made while the lock was held not programmed %v after its release: %v", recovery.Round(time.Millisecond), err)
	}
	t.Logf("the lock was held %v; every change was programmed %v after its release",
		freed.Sub(held).Round(time.Millisecond), recovery.Round(time.Millisecond))
	if mode == "iptables" && recovery > scaled(5*time.Second) {
		t.Errorf("recovery took %v after the lock was released; the retry backoff promises about a second", recovery)
	}
	e.requireRunning(t)
	faultReport(t, "xtables-lock-held-10s", mode, loop, recovery, false)
}

// foreignChains is what the foreign agent of testForeignRuleEdits adds in chains and
// tables of its own, hooked where kproxy's are: kproxy must leave all of it alone.
// 192.0.2.10 (TEST-NET-1) never occurs in the cluster, so these rules change no packet
// of the test.
var (
	foreignIPTables = [][]string{
		{"-t", "nat", "-N", "FOREIGN-PRE"},
		{"-t", "nat", "-A", "FOREIGN-PRE", "-d", "192.0.2.10/32", "-j", "RETURN"},
		{"-t", "nat", "-I", "PREROUTING", "1", "-j", "FOREIGN-PRE"},
		{"-t", "filter", "-N", "FOREIGN-FWD"},
		{"-t", "filter", "-A", "FOREIGN-FWD", "-s", "192.0.2.10/32", "-j", "DROP"},
		{"-t", "filter", "-I", "FORWARD", "1", "-j", "FOREIGN-FWD"},
	}
	// foreignIPTablesLines are those rules as iptables-save prints them.
	foreignIPTablesLines = []string{
		"-A PREROUTING -j FOREIGN-PRE",
		"-A FOREIGN-PRE -d 192.0.2.10/32 -j RETURN",
		"-A FORWARD -j FOREIGN-FWD",
		"-A FOREIGN-FWD -s 192.0.2.10/32 -j DROP",
	}
	foreignNFT = `table ip foreign {
	chain foreign_pre {
		type nat hook prerouting priority dstnat - 10; policy accept;
		ip daddr 192.0.2.10 counter return
	}
	chain foreign_forward {
		type filter hook forward priority filter - 10; policy accept;
		ip saddr 192.0.2.10 drop
	}
}
`
)

// testForeignRuleEdits plays another agent (a CNI, firewalld, an operator with a
// shell) that edits kproxy's own chains and map elements behind its back (deletes an
// endpoint's dispatch, inserts a rule that bypasses a Service, moves a rule, deletes
// a jump from a built-in chain, deletes a map element) and adds rules of its own in
// its own chains on the same hooks. Nothing of that empties a chain, so no flush check
// sees it: the periodic full sync (every faultSyncPeriod here) must put kproxy's rules
// back exactly as they were, and leave the foreign chains and their jumps in place.
func testForeignRuleEdits(t *testing.T, mode string) {
	f := newFaultEnv(t, mode, nil)
	e := f.env
	e.dumpOnFailure(t, "steady", "edited")
	edited := cluster.Service{Namespace: ns, Name: "edited", ClusterIP: "10.96.0.54", Ports: []cluster.ServicePort{httpPort}}
	e.apply(t, edited, "pod-a2", "pod-b1")
	editedTarget := hostPort(edited.ClusterIP, 80)
	e.waitAnswer(t, "pod-a1", "tcp", editedTarget, firstSync)
	before := kproxyRules(t, e)

	loop := startClientLoop(t, e.c, "pod-a1", f.target)
	time.Sleep(500 * time.Millisecond) // a few connections before the edits
	if mode == "nftables" {
		editNFTables(t, e, edited)
	} else {
		editIPTables(t, e, edited, f.steady)
	}
	edited0 := time.Now()
	if now := kproxyRules(t, e); now == before {
		t.Fatalf("the foreign edits did not change kproxy's rules")
	}

	var now string
	err := e.c.WaitFor(func() error {
		if now = kproxyRules(t, e); now != before {
			return fmt.Errorf("kproxy's rules still differ")
		}
		return nil
	}, scaled(3*faultSyncPeriod))
	repaired := time.Since(edited0)
	if err != nil {
		t.Errorf("kproxy's rules not restored %v after the edits (sync period %v):\n%s", repaired.Round(time.Millisecond), faultSyncPeriod, lineDiff(before, now))
	}
	t.Logf("kproxy's rules were exactly restored %v after the foreign edits (full sync every %v)", repaired.Round(time.Millisecond), faultSyncPeriod)

	// The foreign agent's own rules are untouched.
	if mode == "nftables" {
		out, err := e.c.Exec(cluster.KproxyNode, "nft", "list", "table", "ip", "foreign")
		if err != nil || !strings.Contains(out, "ip daddr 192.0.2.10 counter") || !strings.Contains(out, "ip saddr 192.0.2.10 drop") {
			t.Errorf("the foreign table was changed: %v\n%s", err, out)
		}
	} else {
		dump, err := e.c.Exec(cluster.KproxyNode, "iptables-save")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range foreignIPTablesLines {
			if !strings.Contains(dump, want+"\n") {
				t.Errorf("the foreign rule %q is gone:\n%s", want, dump)
			}
		}
	}
	replies := e.c.Request("pod-a1", "tcp", editedTarget, 20)
	requireBackends(t, "the edited Service after the repair", replies, "pod-a2", "pod-b1")
	e.requireRunning(t)
	faultReport(t, "foreign-rule-edits", mode, loop, repaired, false)
}

// kproxyRules is kproxy's part of node1's ruleset, comparable across syncs: in
// iptables mode every line of the nat and filter tables that names a KUBE- chain,
// in order, without counters; in nftables mode the lines of kproxy's table, sorted
// (the kernel lists a map's elements in hash order, which a delete and re-add can
// change), without counters.
func kproxyRules(t *testing.T, e *env) string {
	t.Helper()
	var lines []string
	if e.mode == "nftables" {
		out, err := e.c.Exec(cluster.KproxyNode, "nft", "list", "table", "ip", "kube-proxy")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(out, "\n") {
			l = counterRE.ReplaceAllString(strings.TrimSpace(l), "counter")
			l = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(l, "elements = { "), "type "), ",")
			if l != "" {
				lines = append(lines, l)
			}
		}
		slices.Sort(lines)
	} else {
		for _, table := range []string{"nat", "filter"} {
			out, err := e.c.Exec(cluster.KproxyNode, "iptables-save", "-t", table)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, "KUBE-") {
					lines = append(lines, table+" "+chainCountersRE.ReplaceAllString(l, ""))
				}
			}
		}
	}
	return strings.Join(lines, "\n")
}

// editIPTables makes the foreign agent's edits in iptables mode: one iptables-restore
// transaction that deletes an endpoint rule of edited, inserts a RETURN for edited's
// ClusterIP at the top of KUBE-SERVICES, moves steady's dispatch rule to the end of
// KUBE-SERVICES (atomically, so steady keeps working) and deletes kproxy's jump from
// OUTPUT; and the foreign chains with their jumps.
func editIPTables(t *testing.T, e *env, edited, steady cluster.Service) {
	t.Helper()
	dump, err := e.c.Exec(cluster.KproxyNode, "iptables-save", "-t", "nat")
	if err != nil {
		t.Fatal(err)
	}
	var endpointRule, steadyRule, outputJump string
	for _, l := range strings.Split(dump, "\n") {
		switch {
		case endpointRule == "" && strings.HasPrefix(l, "-A KUBE-SVC-") && strings.Contains(l, ns+"/"+edited.Name+":http -> "):
			endpointRule = l
		case steadyRule == "" && strings.HasPrefix(l, "-A KUBE-SERVICES ") && strings.Contains(l, "-d "+steady.ClusterIP+"/32"):
			steadyRule = l
		case strings.HasPrefix(l, "-A OUTPUT ") && strings.HasSuffix(l, "-j KUBE-SERVICES"):
			outputJump = l
		}
	}
	if endpointRule == "" || steadyRule == "" || outputJump == "" {
		t.Fatalf("rules to edit not found (endpoint %q, steady %q, OUTPUT jump %q) in:\n%s", endpointRule, steadyRule, outputJump, dump)
	}
	edits := strings.Join([]string{
		"*nat",
		"-D" + strings.TrimPrefix(endpointRule, "-A"),
		"-I KUBE-SERVICES 1 -d " + edited.ClusterIP + "/32 -p tcp -m tcp --dport 80 -j RETURN",
		"-D" + strings.TrimPrefix(steadyRule, "-A"),
		steadyRule,
		"-D" + strings.TrimPrefix(outputJump, "-A"),
		"COMMIT", "",
	}, "\n")
	if out, err := e.c.ExecInput(cluster.KproxyNode, edits, "iptables-restore", "--noflush"); err != nil {
		t.Fatalf("foreign edits: %v\n%s\ninput:\n%s", err, out, edits)
	}
	for _, args := range foreignIPTables {
		if _, err := e.c.Exec(cluster.KproxyNode, append([]string{"iptables"}, args...)...); err != nil {
			t.Fatalf("foreign rule: %v", err)
		}
	}
}

// editNFTables makes the foreign agent's edits in nftables mode: delete the endpoint
// dispatch rule of edited's Service chain, insert a rule that returns edited's
// traffic at the top of the services chain, delete edited's element of the
// service-ips map and nat-output's jump to the services chain; and a table of its
// own with base chains on the same hooks.
func editNFTables(t *testing.T, e *env, edited cluster.Service) {
	t.Helper()
	table, err := e.c.Exec(cluster.KproxyNode, "nft", "list", "table", "ip", "kube-proxy")
	if err != nil {
		t.Fatal(err)
	}
	var svcChain string
	for _, l := range strings.Split(table, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "chain service-") && strings.Contains(l, "-"+ns+"/"+edited.Name+"/tcp/http") {
			svcChain = strings.TrimSuffix(strings.TrimPrefix(l, "chain "), " {")
		}
	}
	if svcChain == "" {
		t.Fatalf("no Service chain of %s/%s in:\n%s", ns, edited.Name, table)
	}
	dispatch := nftRuleHandle(t, e, svcChain, "numgen")
	outputJump := nftRuleHandle(t, e, "nat-output", "jump services")
	script := strings.Join([]string{
		"delete rule ip kube-proxy " + svcChain + " handle " + dispatch,
		"insert rule ip kube-proxy services ip daddr " + edited.ClusterIP + " tcp dport 80 return",
		"delete element ip kube-proxy service-ips { " + edited.ClusterIP + " . tcp . 80 }",
		"delete rule ip kube-proxy nat-output handle " + outputJump,
		"",
	}, "\n")
	if out, err := e.c.ExecInput(cluster.KproxyNode, script, "nft", "-f", "-"); err != nil {
		t.Fatalf("foreign edits: %v\n%s\nscript:\n%s", err, out, script)
	}
	if out, err := e.c.ExecInput(cluster.KproxyNode, foreignNFT, "nft", "-f", "-"); err != nil {
		t.Fatalf("foreign table: %v\n%s", err, out)
	}
}

// nftRuleHandle is the handle of the first rule of kproxy's chain that contains what.
func nftRuleHandle(t *testing.T, e *env, chain, what string) string {
	t.Helper()
	out, err := e.c.Exec(cluster.KproxyNode, "nft", "-a", "list", "chain", "ip", "kube-proxy", chain)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if i := strings.LastIndex(l, "# handle "); i >= 0 && strings.Contains(l, what) {
			return strings.TrimSpace(l[i+len("# handle "):])
		}
	}
	t.Fatalf("no rule with %q in chain %s:\n%s", what, chain, out)
	return ""
}

var (
	// counterRE is an nft rule's counter with its values.
	counterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)
	// chainCountersRE is the counters of an iptables-save chain declaration.
	chainCountersRE = regexp.MustCompile(` \[\d+:\d+\]$`)
)

// lineDiff lists the lines only in want ("-") and only in got ("+").
func lineDiff(want, got string) string {
	count := map[string]int{}
	for _, l := range strings.Split(want, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(got, "\n") {
		count[l]--
	}
	var b strings.Builder
	for l, n := range count {
		for ; n > 0; n-- {
			fmt.Fprintf(&b, "- %s\n", l)
		}
		for ; n < 0; n++ {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	if b.Len() == 0 {
		return "(the same lines in another order)"
	}
	return b.String()
}

// conntrackMaxPath is nf_conntrack_max. The kernel holds every network namespace to
// this one limit and lets only the initial namespace write it, so the case changes
// it for the whole machine, briefly, and puts it back.
const conntrackMaxPath = "/proc/sys/net/netfilter/nf_conntrack_max"

// testConntrackTableFull fills node1's conntrack table: the limit is lowered to a
// little above what node1 holds, and the rest is filled with established, assured
// entries between TEST-NET addresses (which the kernel may not evict early). New
// connections are then dropped by the kernel whatever kproxy does; what kproxy must
// do is keep programming changes, keep deleting stale UDP flows, say that the table is
// full (log and kproxy_conntrack_* gauges), and not spin. Once the limit is restored
// connections must work again at once.
func testConntrackTableFull(t *testing.T, mode string) {
	f := newFaultEnv(t, mode, nil)
	e := f.env
	e.dumpOnFailure(t, "steady", "dns-full", "while-full")
	// A UDP Service with flows through node1 to pod-b1, made before the table fills.
	dnsSvc := cluster.Service{Namespace: ns, Name: "dns-full", ClusterIP: "10.96.0.56", Ports: []cluster.ServicePort{dnsPort}}
	e.apply(t, dnsSvc, "pod-b1")
	dnsTarget := hostPort(dnsSvc.ClusterIP, 53)
	e.waitAnswer(t, "pod-a1", "udp", dnsTarget, firstSync)
	requireAll(t, "UDP flows before the fill", e.c.Request("pod-a1", "udp", dnsTarget, 5))
	podB1 := cluster.PodByName("pod-b1").IP
	if n := udpFlowsTo(t, e, dnsSvc.ClusterIP, podB1); n == 0 {
		t.Fatalf("no conntrack entry of the UDP Service to pod-b1 before the fill")
	}

	loop := startClientLoop(t, e.c, "pod-a1", f.target)
	time.Sleep(time.Second) // some connections before the fill

	// Loopback connections are tracked too: with the table full, scraping kproxy's
	// metrics on 127.0.0.1 fails like every other new connection. An operator who
	// wants to see a full node exempts the scrape path, as here for all of node1's
	// loopback (kproxy's rules do not involve it in this case).
	for _, rule := range [][]string{{"OUTPUT", "-o"}, {"PREROUTING", "-i"}} {
		if _, err := e.c.Exec(cluster.KproxyNode, "iptables", "-t", "raw", "-A", rule[0], rule[1], "lo", "-j", "NOTRACK"); err != nil {
			t.Fatal(err)
		}
	}
	orig, err := os.ReadFile(conntrackMaxPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(conntrackMaxPath, orig, 0o644) })
	// The limit binds every namespace on the machine: it goes a little above the
	// fullest one, so that nothing else running here loses connections, and node1
	// alone is filled up to it.
	limit := busiestConntrackTable(t, e) + 300
	if err := os.WriteFile(conntrackMaxPath, []byte(fmt.Sprint(limit)), 0o644); err != nil {
		t.Fatalf("lower nf_conntrack_max: %v", err)
	}
	fill := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do i=$((i+1)); conntrack -I -p tcp -s 198.18.$((i/250)).$((i%%250+1)) -d 198.19.0.1 --sport 40000 --dport 80 --state ESTABLISHED -t 600 -u ASSURED >/dev/null 2>&1 || true; done`, limit-conntrackCount(t, e)+50)
	if out, err := e.c.Exec(cluster.KproxyNode, "sh", "-c", fill); err != nil {
		t.Fatalf("fill the conntrack table: %v\n%s", err, out)
	}
	fullAt := time.Now()
	if n := conntrackCount(t, e); n < limit {
		t.Fatalf("the table holds %d entries after the fill, limit %d: not full", n, limit)
	}
	// The fault is real: a new connection is dropped by the kernel.
	if r := e.c.Request("pod-a1", "tcp", f.target, 1, cluster.Timeout(time.Second))[0]; r.Error == "" {
		t.Fatalf("a new connection was answered (by %s) with the conntrack table full", r.Backend)
	}
	cpuBefore := processCPU(t, e.proxy.Pid())
	before := scrapeMetrics(t, e.c)

	// kproxy keeps programming: a new Service appears in the rules (packets cannot
	// prove it while the kernel drops new connections).
	whileFull := cluster.Service{Namespace: ns, Name: "while-full", ClusterIP: "10.96.0.57", Ports: []cluster.ServicePort{httpPort}}
	e.apply(t, whileFull, "pod-b2")
	err = e.c.WaitFor(func() error {
		if !strings.Contains(kproxyRules(t, e), whileFull.ClusterIP) {
			return fmt.Errorf("%s not in kproxy's rules", whileFull.ClusterIP)
		}
		return nil
	}, scaled(5*time.Second))
	if err != nil {
		t.Errorf("a Service written while the table was full was not programmed: %v", err)
	}
	// ... and keeps cleaning: the UDP Service's endpoint moves to pod-b2, and its
	// flows to pod-b1 must go.
	e.setEndpoints(t, dnsSvc, "pod-b2")
	err = e.c.WaitFor(func() error {
		if n := udpFlowsTo(t, e, dnsSvc.ClusterIP, podB1); n > 0 {
			return fmt.Errorf("%d UDP flows to the removed endpoint remain", n)
		}
		return nil
	}, scaled(5*time.Second))
	if err != nil {
		t.Errorf("stale UDP flows not deleted while the table was full: %v", err)
	}
	// ... and says so: the log line and the gauges.
	// The watch checks every 10 s.
	e.waitLogLine(t, "The conntrack table is full or nearly", scaled(15*time.Second))
	m := scrapeMetrics(t, e.c)
	if got := m["kproxy_conntrack_max"]; got != float64(limit) {
		t.Errorf("kproxy_conntrack_max = %v, want %d", got, limit)
	}
	if got := m["kproxy_conntrack_entries"]; got < float64(limit) {
		t.Errorf("kproxy_conntrack_entries = %v, want at least the limit %d", got, limit)
	}
	if d := metricTotal(m, "kubeproxy_conntrack_reconciler_deleted_entries_total") - metricTotal(before, "kubeproxy_conntrack_reconciler_deleted_entries_total"); d < 1 {
		t.Errorf("kubeproxy_conntrack_reconciler_deleted_entries_total did not move while the table was full")
	}
	// ... without spinning: CPU time over the full period, and the number of syncs.
	cpu := processCPU(t, e.proxy.Pid()) - cpuBefore
	fullFor := time.Since(fullAt)
	syncs := metricTotal(m, "kubeproxy_sync_proxy_rules_duration_seconds_count") - metricTotal(before, "kubeproxy_sync_proxy_rules_duration_seconds_count")
	t.Logf("with the table full for %v kproxy used %v of CPU and ran %v syncs", fullFor.Round(time.Millisecond), cpu, syncs)
	if cpu > fullFor/10 {
		t.Errorf("kproxy used %v of CPU in %v with the table full: it spins", cpu, fullFor.Round(time.Millisecond))
	}
	if maxSyncs := fullFor.Seconds()/faultSyncPeriod.Seconds() + 10; syncs > maxSyncs {
		t.Errorf("%v syncs in %v with the table full; want at most %v (two changes and periodic syncs)", syncs, fullFor.Round(time.Millisecond), maxSyncs)
	}

	if err := os.WriteFile(conntrackMaxPath, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	took := e.waitAnswer(t, "pod-a1", "tcp", hostPort(whileFull.ClusterIP, 80), 5*time.Second)
	t.Logf("with the limit restored, the Service written while the table was full answered after %v", took.Round(time.Millisecond))
	requireAll(t, "the UDP Service after the table drained", e.c.Request("pod-a1", "udp", dnsTarget, 5))
	e.waitLogLine(t, "The conntrack table has room again", scaled(15*time.Second))
	e.requireRunning(t)
	faultReport(t, "conntrack-table-full", mode, loop, took, true)
}

// conntrackCount is node1's number of conntrack entries.
func conntrackCount(t *testing.T, e *env) int {
	t.Helper()
	out, err := e.c.Exec(cluster.KproxyNode, "cat", "/proc/sys/net/netfilter/nf_conntrack_count")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if _, err := fmt.Sscan(out, &n); err != nil {
		t.Fatalf("nf_conntrack_count %q: %v", out, err)
	}
	return n
}

// busiestConntrackTable is the most conntrack entries any named network namespace
// (and the initial one) holds: the least nf_conntrack_max that drops nothing.
func busiestConntrackTable(t *testing.T, e *env) int {
	t.Helper()
	most := conntrackCount(t, e)
	if b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count"); err == nil {
		var n int
		if _, err := fmt.Sscan(string(b), &n); err == nil && n > most {
			most = n
		}
	}
	names, _ := os.ReadDir("/run/netns")
	for _, d := range names {
		out, err := exec.Command("ip", "netns", "exec", d.Name(), "cat", "/proc/sys/net/netfilter/nf_conntrack_count").Output()
		if err != nil {
			continue // not tracking anything (no conntrack there yet), or gone
		}
		var n int
		if _, err := fmt.Sscan(string(out), &n); err == nil && n > most {
			most = n
		}
	}
	return most
}

// udpFlowsTo counts node1's UDP conntrack entries to clusterIP answered by endpoint.
func udpFlowsTo(t *testing.T, e *env, clusterIP, endpoint string) int {
	t.Helper()
	out, _ := e.c.Exec(cluster.KproxyNode, "conntrack", "-L", "-p", "udp", "--orig-dst", clusterIP)
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "src="+endpoint+" ") {
			n++
		}
	}
	return n
}

// processCPU is the user and system CPU time a process has used so far.
func processCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name (in parentheses, which may hold spaces):
	// state is field 3, utime 14, stime 15.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var utime, stime int64
	if _, err := fmt.Sscan(fields[11]+" "+fields[12], &utime, &stime); err != nil {
		t.Fatalf("/proc/%d/stat: %v", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ is 100 on Linux
}

// waitLogLine fails t unless kproxy's log holds text within timeout.
func (e *env) waitLogLine(t *testing.T, text string, timeout time.Duration) {
	t.Helper()
	err := e.c.WaitFor(func() error {
		if !strings.Contains(e.proxy.Logs(), text) {
			return fmt.Errorf("no log line with %q", text)
		}
		return nil
	}, timeout)
	if err != nil {
		t.Errorf("%v; log:\n%s", err, tail(e.proxy.Logs(), 20))
	}
}
