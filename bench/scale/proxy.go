package scale

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// proxyProc is one proxy process under measurement in node1.
type proxyProc struct {
	impl, mode string
	proc       *cluster.Process
	started    time.Time // just before the process was started
}

// proxyArgs are the flags both implementations share (kproxy takes kube-proxy's
// flags), so the two run with identical settings. Conntrack limits are global
// sysctls that a network namespace cannot set, hence --conntrack-max-per-core=0.
func (e *env) proxyArgs(impl, mode string) []string {
	args := []string{
		"--kubeconfig", e.srv.KubeconfigPath,
		"--hostname-override", cluster.KproxyNode,
		"--proxy-mode", mode,
		"--cluster-cidr", cluster.ClusterCIDR,
		"--iptables-min-sync-period", e.cfg.MinSyncPeriod.String(),
		"--iptables-sync-period", "30s",
		"--conntrack-max-per-core", "0",
		"--metrics-bind-address", "127.0.0.1:10249",
		"--healthz-bind-address", "127.0.0.1:10256",
		"--v", "2",
	}
	if impl == ImplKproxy {
		args = append(args, "--state-dir", filepath.Join(e.workDir, "kproxy-state"))
	}
	return args
}

func (e *env) startProxy(impl, mode string) (*proxyProc, error) {
	bin := e.kproxyBin
	if impl == ImplUpstream {
		bin = e.upstreamBin
	}
	label := impl + "-" + mode
	started := time.Now()
	p, err := e.c.StartProcess(cluster.KproxyNode, label, bin, e.proxyArgs(impl, mode)...)
	if err != nil {
		return nil, err
	}
	e.cfg.logf("bench: %s started in %s (pid %d), log %s", label, e.c.NS(cluster.KproxyNode), p.Pid(), p.LogPath)
	return &proxyProc{impl: impl, mode: mode, proc: p, started: started}, nil
}

// alive returns an error with the log tail if the proxy has exited.
func (p *proxyProc) alive() error {
	if p.proc.Running() {
		return nil
	}
	return fmt.Errorf("bench: %s-%s exited; log %s:\n%s", p.impl, p.mode, p.proc.LogPath, tail(p.proc.Logs(), 30))
}

// cpu is utime+stime of the proxy and of the children it has reaped (iptables-restore,
// nft), from /proc/PID/stat, while it runs.
func (p *proxyProc) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.proc.Pid()))
	if err != nil {
		return 0, err
	}
	s := string(b)
	// Fields after the command name (which may hold spaces) start after ") ".
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// utime, stime, cutime, cstime are fields 14..17 of stat, 12..15 here.
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: /proc/%d/stat field %d: %w", p.proc.Pid(), i+3, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / 100, nil // USER_HZ is 100 on Linux
}

// peakRSS is the proxy's VmHWM in bytes.
func (p *proxyProc) peakRSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.proc.Pid()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("bench: no VmHWM in /proc/%d/status", p.proc.Pid())
}

// stop sends SIGTERM and returns the CPU time of the whole process tree over the
// whole run, from the rusage wait4 reports (self plus reaped children).
func (p *proxyProc) stop() (time.Duration, error) {
	_ = p.proc.Stop() // kube-proxy exits with "terminated": not an error here
	st := p.proc.State()
	if st == nil {
		return 0, fmt.Errorf("bench: %s-%s: no exit status", p.impl, p.mode)
	}
	ru, ok := st.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, fmt.Errorf("bench: %s-%s: no rusage", p.impl, p.mode)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

var klogErrorRE = regexp.MustCompile(`(?m)^E[0-9]{4} .*$`)

// logErrors returns the klog error lines the proxy wrote.
func (p *proxyProc) logErrors() []string {
	return klogErrorRE.FindAllString(p.proc.Logs(), -1)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanRules runs "kproxy --cleanup" in node1 (it removes upstream's rules too: the
// names are the same) and checks that nothing is left. If the cleanup fails or
// leaves rules, the problem is recorded for the report and node1's proxy tables are
// flushed directly (node1 holds no other rules), so one bad cleanup does not spoil
// the runs after it; only rules that survive that too are an error.
func (e *env) cleanRules() error {
	out, err := e.c.RunKproxyCleanup()
	left, lerr := e.kernel.leftovers()
	if lerr != nil {
		return fmt.Errorf("bench: checking leftovers: %w", lerr)
	}
	if err == nil && len(left) == 0 {
		return nil
	}
	problem := fmt.Sprintf("kproxy --cleanup left %d KUBE lines", len(left))
	if err != nil {
		problem = fmt.Sprintf("kproxy --cleanup failed (%v): %s", err, firstLines(errorLines(out), 3))
	}
	e.cleanupProblems = append(e.cleanupProblems, problem)
	e.cfg.logf("bench: WARNING: %s; flushing node1's proxy rules directly", problem)
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"nat", "filter", "mangle"} {
			_, _ = e.kernel.exec(ipt, "-w", "5", "-t", table, "-F")
			_, _ = e.kernel.exec(ipt, "-w", "5", "-t", table, "-X")
		}
	}
	for _, family := range []string{"ip", "ip6"} {
		_, _ = e.kernel.exec("nft", "delete", "table", family, "kube-proxy")
	}
	if left, err = e.kernel.leftovers(); err != nil {
		return fmt.Errorf("bench: checking leftovers: %w", err)
	}
	if len(left) > 0 {
		if len(left) > 10 {
			left = append(left[:10], fmt.Sprintf("... (%d more)", len(left)-10))
		}
		return fmt.Errorf("bench: rules left in node1 even after flushing:\n%s", strings.Join(left, "\n"))
	}
	return nil
}

// errorLines keeps the lines of a klog output that report errors, and their
// continuation lines.
func errorLines(out string) []string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "E") || strings.HasPrefix(l, "\t") {
			keep = append(keep, strings.TrimSpace(l))
		}
	}
	return keep
}

func firstLines(lines []string, n int) string {
	if len(lines) > n {
		lines = append(lines[:n:n], "...")
	}
	return strings.Join(lines, " / ")
}
