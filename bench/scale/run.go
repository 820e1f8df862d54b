package scale

import (
	"fmt"
	"github.com/kproxy/kproxy/internal/iptables"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// RunResult is one implementation in one mode at full size.
type RunResult struct {
	Impl, Mode  string
	Sync        syncResult
	Size        rulesetSize
	FirstPacket firstPacketResult
	Latency     latencyResult
	Burst       burstResult
	CPU         time.Duration // whole run, proxy plus the children it ran
	PeakRSS     int64         // bytes, VmHWM
	LogErrors   []string
	Err         error
}

// BaselineResult is one implementation in one mode with only BaselineServices.
type BaselineResult struct {
	Impl, Mode  string
	Sync        syncResult
	FirstPacket firstPacketResult
	Err         error
}

// Report is everything one benchmark run measured.
type Report struct {
	Config     Config
	Started    time.Time
	Elapsed    time.Duration
	LoadBefore string
	LoadAfter  string
	Revision   string
	CreateTime time.Duration // loading the API server with the Services
	Baselines  []BaselineResult
	Runs       []RunResult
	// CleanupProblems are failures of "kproxy --cleanup" between runs; the
	// benchmark flushed the rules itself then.
	CleanupProblems []string
}

// Run sets everything up, measures every implementation in every mode one after
// the other, and tears everything down. It returns an error only when the
// benchmark could not run at all; a failed measurement is recorded in its result.
func Run(cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// The iptables-save runs that confirm a sync need more than the usual 8 MiB of
	// stack at 10,000 Services (see iptables.RaiseChildStackLimit).
	if _, err := iptables.RaiseChildStackLimit(); err != nil {
		cfg.logf("bench: cannot raise the stack limit for iptables-save: %v", err)
	}
	rep := &Report{Config: cfg, Started: time.Now(), LoadBefore: loadAvg()}
	e, err := setup(cfg)
	if err != nil {
		return nil, err
	}
	rep.Revision = revision(e.repo)
	failed := false
	var closeOnce sync.Once
	defer closeOnce.Do(func() { e.close(failed || cfg.KeepLogs) })
	if cfg.HandleSignals {
		// An interrupted benchmark must not leave proxies, namespaces or the API
		// server behind.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sigs)
		go func() {
			if _, ok := <-sigs; ok {
				cfg.logf("bench: interrupted; cleaning up")
				closeOnce.Do(func() { e.close(true) })
				os.Exit(130)
			}
		}()
	}

	start := time.Now()
	b := cfg.BaselineServices
	if err := createServices(bgCtx(), e.client, e.svcs, 0, b, cfg.Endpoints, cfg.CreateWorkers, cfg.logf); err != nil {
		failed = true
		return nil, err
	}
	for _, mode := range cfg.Modes {
		for _, impl := range cfg.Impls {
			res := e.baselineRun(impl, mode)
			failed = failed || res.Err != nil
			rep.Baselines = append(rep.Baselines, res)
		}
	}
	if err := createServices(bgCtx(), e.client, e.svcs, b, cfg.Services, cfg.Endpoints, cfg.CreateWorkers, cfg.logf); err != nil {
		failed = true
		return nil, err
	}
	rep.CreateTime = time.Since(start)
	for _, mode := range cfg.Modes {
		for _, impl := range cfg.Impls {
			res := e.fullRun(impl, mode)
			failed = failed || res.Err != nil
			rep.Runs = append(rep.Runs, res)
		}
	}
	if err := e.cleanRules(); err != nil {
		failed = true
		cfg.logf("%v", err)
	}
	rep.CleanupProblems = e.cleanupProblems
	rep.Elapsed = time.Since(rep.Started)
	rep.LoadAfter = loadAvg()
	return rep, nil
}

func (e *env) baselineRun(impl, mode string) (res BaselineResult) {
	res = BaselineResult{Impl: impl, Mode: mode}
	n := e.cfg.BaselineServices
	if res.Err = e.cleanRules(); res.Err != nil {
		return res
	}
	p, err := e.startProxy(impl, mode)
	if err != nil {
		res.Err = err
		return res
	}
	defer func() { _, _ = p.stop() }() // its CPU time is wanted only from a full run
	if res.Sync, res.Err = e.waitSync(p, n, e.svcs[0], firstProbePod); res.Err != nil {
		return res
	}
	res.FirstPacket, res.Err = e.firstPacket(mode, n)
	e.cfg.logf("bench: baseline %s-%s with %d Services: sync %v, first packet %v to %s",
		impl, mode, n, res.Sync.Kernel.Round(time.Millisecond), res.FirstPacket.Median, res.FirstPacket.Target)
	return res
}

func (e *env) fullRun(impl, mode string) (res RunResult) {
	res = RunResult{Impl: impl, Mode: mode}
	label := impl + "-" + mode
	defer func() {
		if res.Err != nil {
			e.cfg.logf("bench: %s FAILED: %v", label, res.Err)
		}
	}()
	if res.Err = e.cleanRules(); res.Err != nil {
		return res
	}
	p, err := e.startProxy(impl, mode)
	if err != nil {
		res.Err = err
		return res
	}
	stopped := false
	defer func() {
		if !stopped {
			_, _ = p.stop()
		}
		res.LogErrors = p.logErrors()
		// Put the probe Services back for the next run (its proxy reads them fresh).
		if _, err := e.svcs[len(e.svcs)-1].setEndpoints(bgCtx(), e.client, endpointsOf(lastProbePod)); err != nil && res.Err == nil {
			res.Err = err
		}
		if _, err := e.svcs[0].setEndpoints(bgCtx(), e.client, endpointsOf(firstProbePod)); err != nil && res.Err == nil {
			res.Err = err
		}
	}()
	n := len(e.svcs)
	// step runs f unless an earlier step failed.
	step := func(what string, f func() error) {
		if res.Err != nil {
			return
		}
		t := time.Now()
		if err := f(); err != nil {
			res.Err = fmt.Errorf("%s: %w", what, err)
			return
		}
		e.cfg.logf("bench: %s: %s done in %v", label, what, time.Since(t).Round(time.Millisecond))
	}
	step("initial sync", func() (err error) {
		res.Sync, err = e.waitSync(p, n, e.svcs[n-1], lastProbePod)
		e.cfg.logf("bench: %s: all %d Services in the kernel after %v (last Service answered after %v)",
			label, n, res.Sync.Kernel.Round(time.Millisecond), res.Sync.Probe.Round(time.Millisecond))
		return err
	})
	step("ruleset size", func() (err error) { res.Size, err = e.kernel.size(mode); return err })
	step("first-packet latency", func() (err error) { res.FirstPacket, err = e.firstPacket(mode, n); return err })
	step("programming latency", func() (err error) { res.Latency, err = e.programmingLatency(p); return err })
	step("burst", func() (err error) { res.Burst, err = e.burst(p); return err })
	if p.proc.Running() {
		if res.PeakRSS, err = p.peakRSS(); err != nil && res.Err == nil {
			res.Err = err
		}
	}
	res.CPU, err = p.stop()
	stopped = true
	if err != nil && res.Err == nil {
		res.Err = err
	}
	e.cfg.logf("bench: %s: cpu %v, peak RSS %d MiB, %d error lines in its log", label, res.CPU.Round(10*time.Millisecond), res.PeakRSS>>20, len(p.logErrors()))
	return res
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func revision(repo string) string {
	out, err := run("git", "-C", repo, "describe", "--always", "--dirty")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(out)
}

// Failed reports whether any run or baseline failed.
func (r *Report) Failed() bool {
	for _, b := range r.Baselines {
		if b.Err != nil {
			return true
		}
	}
	for _, x := range r.Runs {
		if x.Err != nil {
			return true
		}
	}
	return false
}
