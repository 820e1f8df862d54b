package scale

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// Issue 7's targets, kproxy against upstream in the same mode and run.
const (
	targetFirstPacket = 1.1 // kproxy at N / kproxy at the baseline size
	targetLatencyP50  = 0.2 // kproxy / upstream
	targetSync        = 0.5
	targetRSS         = 0.5
)

func (r *Report) run(impl, mode string) *RunResult {
	for i := range r.Runs {
		if r.Runs[i].Impl == impl && r.Runs[i].Mode == mode && r.Runs[i].Err == nil {
			return &r.Runs[i]
		}
	}
	return nil
}

func (r *Report) baseline(impl, mode string) *BaselineResult {
	for i := range r.Baselines {
		if r.Baselines[i].Impl == impl && r.Baselines[i].Mode == mode && r.Baselines[i].Err == nil {
			return &r.Baselines[i]
		}
	}
	return nil
}

// row is one line of the results table.
type row struct {
	figure, mode       string
	upstream, kproxy   string
	ratio, target, met string
}

// Markdown is the results table, the details of every run and the conditions.
func (r *Report) Markdown() string {
	c := r.Config
	var w strings.Builder
	fmt.Fprintf(&w, "# Scale benchmark: kproxy vs upstream kube-proxy\n\n")
	fmt.Fprintf(&w, "%d Services x %d endpoints (first-packet baseline: %d Services), min sync period %v, "+
		"%d programming-latency changes, %d connects per first-packet figure, burst %d updates/s for %v.\n\n",
		c.Services, c.Endpoints, c.BaselineServices, c.MinSyncPeriod, c.LatencyChanges, c.FirstPacketConnects, c.BurstRate, c.BurstDuration)
	fmt.Fprintf(&w, "Run %s, revision %s, %d CPUs, load average %s before and %s after (other work shares the machine), took %v.\n\n",
		r.Started.Format("2006-01-02 15:04 MST"), r.Revision, runtime.NumCPU(), r.LoadBefore, r.LoadAfter, r.Elapsed.Round(time.Second))
	fmt.Fprintf(&w, "| Figure | Mode | upstream | kproxy | kproxy/upstream | Target | Met |\n|---|---|---|---|---|---|---|\n")
	for _, mode := range c.Modes {
		for _, rw := range r.rows(mode) {
			fmt.Fprintf(&w, "| %s | %s | %s | %s | %s | %s | %s |\n", rw.figure, rw.mode, rw.upstream, rw.kproxy, rw.ratio, rw.target, rw.met)
		}
	}
	fmt.Fprintf(&w, "\n## Details\n\n")
	for _, b := range r.Baselines {
		if b.Err != nil {
			fmt.Fprintf(&w, "- baseline %s-%s: FAILED: %v\n", b.Impl, b.Mode, b.Err)
			continue
		}
		fmt.Fprintf(&w, "- baseline %s-%s (%d Services): first packet %s to %s, sync %s\n",
			b.Impl, b.Mode, c.BaselineServices, fmtDur(b.FirstPacket.Median), b.FirstPacket.Target, fmtDur(b.Sync.Kernel))
	}
	for _, x := range r.Runs {
		if x.Err != nil {
			fmt.Fprintf(&w, "- %s-%s: FAILED: %v\n", x.Impl, x.Mode, x.Err)
			continue
		}
		fmt.Fprintf(&w, "- %s-%s: first packet to %s; sync %s (%d confirming dumps, one takes %s), "+
			"last Service answering after %s; programming latency max %s over %d changes; "+
			"%d changes timed out; burst %d updates (%.0f/s, %d failed), %d timed markers (%d never programmed), lag p50 %s p99 %s; "+
			"unchanged Service: %d connections, %d failed%s; ruleset %s in %d chains; %d error lines in the proxy log%s\n",
			x.Impl, x.Mode, x.FirstPacket.Target, fmtDur(x.Sync.Kernel), x.Sync.Dumps, fmtDur(x.Sync.PollCost), fmtDur(x.Sync.Probe),
			fmtDur(x.Latency.Max), len(x.Latency.Samples), x.Latency.Timeouts,
			x.Burst.Updates, x.Burst.Rate, x.Burst.Errors, x.Burst.Markers, x.Burst.Unseen, fmtDur(x.Burst.P50Lag), fmtDur(x.Burst.P99Lag),
			x.Burst.ClientConns, x.Burst.ClientFails, firstFail(x.Burst.FirstFail), x.Size, x.Size.Chains, len(x.LogErrors), firstLine(x.LogErrors))
	}
	for _, p := range r.CleanupProblems {
		fmt.Fprintf(&w, "- between runs: %s (the benchmark flushed node1's rules itself)\n", strings.ReplaceAll(p, "|", "/"))
	}
	fmt.Fprintf(&w, "\n## How it is measured\n\n%s", methodNotes)
	return w.String()
}

func firstFail(s string) string {
	if s == "" {
		return ""
	}
	return " (first: " + s + ")"
}

func firstLine(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return " (first: `" + strings.ReplaceAll(lines[0], "|", "/") + "`)"
}

const methodNotes = `- Both proxies run in the node1 namespace of the e2e cluster with the same flags (kube-proxy's),
  against one kube-apiserver, one after the other; ` + "`kproxy --cleanup`" + ` empties the rules between runs
  and the benchmark checks that nothing is left.
- Fake endpoints are addresses in 10.244.128.0/17, which a sink namespace owns (AnyIP route) and
  answers on, naming the address; probe Services point at real echo pods.
- Initial sync: process start until 32 Services spread over the creation order (and the last one)
  have each answered a connection (probed every ~5 ms), confirmed by one ` + "`iptables-save -t nat`" + ` /
  ` + "`nft list map ip kube-proxy service-ips`" + ` holding every Service's ClusterIP; if that dump is not
  complete yet, the first complete one (polled every ~250 ms) gives the time. Dumps are not polled
  throughout because at 10,000 Services one takes seconds of CPU the proxy needs.
- First packet: median TCP connect time from pod-a1 (a fresh connection, so the SYN walks the nat
  rules) to the Service whose ClusterIP dispatch rule is last in iptables-save order (nftables: the
  last fake Service created), against the same with only the baseline Services. Probe Services
  (endpoints on pods) are skipped so every measured path ends in the sink.
- Programming latency: from the Update call returning to the start of the first connection (polled
  every ~5 ms) answered by the new endpoint; changes spaced by more than the min sync period.
- Burst: one update in ten moves a probe Service to a fresh address; the others replace one endpoint
  of a fake Service (a rolling update), round robin. A marker's lag runs from its acknowledgement
  to the first connection answered by it or a later marker.
- CPU: utime+stime of the proxy and the children it reaped (iptables-restore, nft), from wait4's
  rusage after SIGTERM, over the whole run (sync, measurements, burst); "initial sync" CPU from
  /proc/PID/stat at the end of the sync. Peak RSS: VmHWM of the proxy process.
`

func (r *Report) rows(mode string) []row {
	up, kp := r.run(ImplUpstream, mode), r.run(ImplKproxy, mode)
	upB, kpB := r.baseline(ImplUpstream, mode), r.baseline(ImplKproxy, mode)
	var rows []row
	add := func(figure string, get func(*RunResult) float64, format func(float64) string, target float64) {
		rw := row{figure: figure, mode: mode, upstream: "—", kproxy: "—", ratio: "—", target: "—", met: "—"}
		var u, k float64
		if up != nil {
			u = get(up)
			rw.upstream = format(u)
		}
		if kp != nil {
			k = get(kp)
			rw.kproxy = format(k)
		}
		if up != nil && kp != nil && u > 0 {
			rw.ratio = fmt.Sprintf("%.2f", k/u)
			if target > 0 {
				rw.target = fmt.Sprintf("≤ %.1f", target)
				rw.met = yesNo(k/u <= target)
			}
		}
		rows = append(rows, rw)
	}
	dur := func(f func(*RunResult) time.Duration) func(*RunResult) float64 {
		return func(x *RunResult) float64 { return float64(f(x)) }
	}
	fd := func(v float64) string { return fmtDur(time.Duration(v)) }
	add("initial sync", dur(func(x *RunResult) time.Duration { return x.Sync.Kernel }), fd, targetSync)
	add("initial sync, last Service answering", dur(func(x *RunResult) time.Duration { return x.Sync.Probe }), fd, 0)
	add("first packet, last Service", dur(func(x *RunResult) time.Duration { return x.FirstPacket.Median }), fd, 0)

	// First packet at N against the baseline size, per implementation.
	fp := row{figure: fmt.Sprintf("first packet, %d vs %d Services", r.Config.Services, r.Config.BaselineServices),
		mode: mode, upstream: "—", kproxy: "—", ratio: "—", target: fmt.Sprintf("kproxy ≤ %.1f×", targetFirstPacket), met: "—"}
	if up != nil && upB != nil && upB.FirstPacket.Median > 0 {
		fp.upstream = fmt.Sprintf("%.2f× (%s)", ratio(up.FirstPacket.Median, upB.FirstPacket.Median), fmtDur(upB.FirstPacket.Median))
	}
	if kp != nil && kpB != nil && kpB.FirstPacket.Median > 0 {
		q := ratio(kp.FirstPacket.Median, kpB.FirstPacket.Median)
		fp.kproxy = fmt.Sprintf("%.2f× (%s)", q, fmtDur(kpB.FirstPacket.Median))
		fp.met = yesNo(q <= targetFirstPacket)
	}
	rows = append(rows, fp)

	add("programming latency p50", dur(func(x *RunResult) time.Duration { return x.Latency.P50 }), fd, targetLatencyP50)
	add("programming latency p99", dur(func(x *RunResult) time.Duration { return x.Latency.P99 }), fd, 0)

	limit := r.Config.MinSyncPeriod + 100*time.Millisecond
	lag := row{figure: fmt.Sprintf("burst %d/s: max kernel lag", r.Config.BurstRate), mode: mode, upstream: "—", kproxy: "—",
		ratio: "—", target: "kproxy ≤ " + fmtDur(limit), met: "—"}
	fails := row{figure: "burst: failed connections to an unchanged Service", mode: mode, upstream: "—", kproxy: "—",
		ratio: "—", target: "kproxy 0", met: "—"}
	if up != nil {
		lag.upstream = fmtDur(up.Burst.MaxLag)
		fails.upstream = fmt.Sprintf("%d of %d", up.Burst.ClientFails, up.Burst.ClientConns)
	}
	if kp != nil {
		lag.kproxy = fmtDur(kp.Burst.MaxLag)
		lag.met = yesNo(kp.Burst.MaxLag <= limit)
		fails.kproxy = fmt.Sprintf("%d of %d", kp.Burst.ClientFails, kp.Burst.ClientConns)
		fails.met = yesNo(kp.Burst.ClientFails == 0)
	}
	if up != nil && kp != nil && up.Burst.MaxLag > 0 {
		lag.ratio = fmt.Sprintf("%.2f", ratio(kp.Burst.MaxLag, up.Burst.MaxLag))
	}
	rows = append(rows, lag, fails)

	add("CPU seconds, initial sync", dur(func(x *RunResult) time.Duration { return x.Sync.CPU }), fsec, 0)
	add("CPU seconds, whole run", dur(func(x *RunResult) time.Duration { return x.CPU }), fsec, 0)
	add("peak RSS", func(x *RunResult) float64 { return float64(x.PeakRSS) }, fmib, targetRSS)
	add("ruleset: rules", func(x *RunResult) float64 { return float64(x.Size.Rules) }, fint, 0)
	if mode == ModeNFTables {
		add("ruleset: set/map elements", func(x *RunResult) float64 { return float64(x.Size.Elements) }, fint, 0)
	}
	return rows
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func fsec(v float64) string { return fmt.Sprintf("%.1f s", time.Duration(v).Seconds()) }
func fmib(v float64) string { return fmt.Sprintf("%.0f MiB", v/(1<<20)) }
func fint(v float64) string { return fmt.Sprintf("%d", int64(v)) }

// fmtDur prints microseconds below a millisecond, milliseconds below a second.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}
