package runner

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

// Every test runs in a synctest bubble on a fake clock: the clock moves only when the
// test steps it, and synctest.Wait returns once the runner has done everything that
// step (or trigger) allows and is blocked again. So a test states exactly when each
// run starts, and "no run" is a fact rather than a timeout.

// t0 is the fake clock's start.
var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// rig runs one Runner on a fake clock and records when (in fake time) each run started.
type rig struct {
	t   *testing.T
	clk *testingclock.FakeClock
	r   *Runner

	// results is what the nth run (1-based) returns; the others succeed.
	results map[int]error
	// runTime is the fake time each run takes: fn steps the clock by it.
	runTime time.Duration
	// gates holds the nth run inside fn until the channel is closed.
	gates map[int]chan struct{}

	mu      sync.Mutex
	starts  []time.Time
	active  int
	overlap bool

	cancel context.CancelFunc
	done   chan struct{}
}

func newRig(t *testing.T, minI, retryI, maxI time.Duration) *rig {
	rg := &rig{t: t, clk: testingclock.NewFakeClock(t0), results: map[int]error{}, gates: map[int]chan struct{}{}}
	rg.r = New(t.Name(), rg.fn, rg.clk, minI, retryI, maxI)
	return rg
}

func (rg *rig) fn(context.Context) error {
	rg.mu.Lock()
	rg.active++
	rg.overlap = rg.overlap || rg.active > 1
	rg.starts = append(rg.starts, rg.clk.Now())
	n := len(rg.starts)
	gate := rg.gates[n]
	rg.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if rg.runTime > 0 {
		rg.clk.Step(rg.runTime)
	}
	rg.mu.Lock()
	rg.active--
	rg.mu.Unlock()
	return rg.results[n]
}

// start runs the Runner until the test ends, and checks then that Run returned and fn
// never overlapped itself.
func (rg *rig) start() {
	ctx, cancel := context.WithCancel(rg.t.Context())
	rg.cancel, rg.done = cancel, make(chan struct{})
	go func() {
		rg.r.Run(ctx)
		close(rg.done)
	}()
	rg.t.Cleanup(func() {
		rg.cancel()
		synctest.Wait()
		if !rg.returned() {
			rg.t.Errorf("Run did not return after its context ended")
		}
		if rg.overlap {
			rg.t.Errorf("fn ran concurrently with itself")
		}
	})
	synctest.Wait()
}

// step moves the fake clock and waits until the runner has reacted.
func (rg *rig) step(d time.Duration) {
	rg.clk.Step(d)
	synctest.Wait()
}

// trigger calls Trigger and waits until the runner has reacted.
func (rg *rig) trigger() {
	rg.r.Trigger()
	synctest.Wait()
}

func (rg *rig) returned() bool {
	select {
	case <-rg.done:
		return true
	default:
		return false
	}
}

// wantStarts checks the runs so far started at exactly these offsets from t0.
func (rg *rig) wantStarts(what string, offsets ...time.Duration) {
	rg.t.Helper()
	rg.mu.Lock()
	defer rg.mu.Unlock()
	want := make([]time.Time, len(offsets))
	for i, o := range offsets {
		want[i] = t0.Add(o)
	}
	if !slices.Equal(rg.starts, want) {
		rg.t.Fatalf("%s: runs started at %v, want %v", what, rg.offsets(), offsets)
	}
}

func (rg *rig) offsets() []time.Duration {
	out := make([]time.Duration, len(rg.starts))
	for i, s := range rg.starts {
		out[i] = s.Sub(t0)
	}
	return out
}

func (rg *rig) count() int {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	return len(rg.starts)
}

const ms = time.Millisecond

func TestRunsOnceAtStartThenEveryMaxInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rg := newRig(t, 10*ms, time.Hour, time.Hour)
		rg.start()
		rg.wantStarts("at start", 0)
		rg.step(time.Hour - ms)
		rg.wantStarts("nothing triggered, maxInterval not over", 0)
		rg.step(ms)
		rg.wantStarts("maxInterval after the first run", 0, time.Hour)
		rg.step(time.Hour)
		rg.wantStarts("maxInterval after the second run", 0, time.Hour, 2*time.Hour)
	})
}

func TestBurstOfTriggersIsCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const minI = 100 * ms
		rg := newRig(t, minI, time.Hour, time.Hour)
		rg.start()
		rg.step(2 * minI) // the min interval is over: the burst may run at once
		for range 100 {
			rg.r.Trigger()
		}
		synctest.Wait()
		// The first trigger runs at once; those that came while that run was being
		// started are served by it or, arriving during it, by one more run a min
		// interval later. Without coalescing there would be a run per trigger.
		if n := rg.count(); n != 2 {
			t.Fatalf("%d runs right after the burst, want the first run and one for the burst", n)
		}
		rg.step(minI)
		rg.step(10 * minI)
		if n := rg.count() - 1; n < 1 || n > 2 {
			t.Fatalf("100 triggers in a burst caused %d runs, want 1 or 2", n)
		}
	})
}

func TestTriggersDuringRunAreServedByOneMoreRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const minI = 50 * ms
		rg := newRig(t, minI, time.Hour, time.Hour)
		rg.gates[1] = make(chan struct{})
		rg.start() // the first run is now held inside fn
		for range 10 {
			rg.r.Trigger()
		}
		close(rg.gates[1])
		synctest.Wait()
		rg.wantStarts("the first run is over, the min interval is not", 0)
		rg.step(minI)
		rg.wantStarts("the run owed to the triggers that came during the first", 0, minI)
		rg.step(100 * minI)
		rg.wantStarts("every trigger already served", 0, minI)
	})
}

// Under constant triggering runs start exactly minInterval apart.
func TestMinIntervalIsHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const minI = 120 * ms
		rg := newRig(t, minI, time.Hour, time.Hour)
		rg.start()
		for range 500 { // 1.5s in steps of 3ms, a trigger at each
			rg.trigger()
			rg.step(3 * ms)
		}
		var want []time.Duration
		for at := time.Duration(0); at <= 1500*ms; at += minI {
			want = append(want, at)
		}
		rg.wantStarts("constant triggering", want...)
	})
}

func TestFailedRunIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const retryI = 200 * ms
		rg := newRig(t, 10*ms, retryI, time.Hour)
		rg.results[1] = errors.New("injected failure")
		rg.start()
		rg.step(retryI - ms)
		rg.wantStarts("before retryInterval", 0)
		rg.step(ms)
		rg.wantStarts("retryInterval after the failure", 0, retryI)
		// The retry succeeded, so the next run is maxInterval (an hour) away.
		rg.step(time.Hour - ms)
		rg.wantStarts("after a successful retry", 0, retryI)
		rg.step(ms)
		rg.wantStarts("maxInterval after the successful retry", 0, retryI, retryI+time.Hour)
	})
}

func TestTriggerBeatsRetryInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const minI, retryI = 50 * ms, 30 * time.Second
		rg := newRig(t, minI, retryI, time.Hour)
		rg.results[1] = errors.New("injected failure")
		rg.start()
		rg.trigger()
		rg.wantStarts("triggered within minInterval of the failed run", 0)
		rg.step(minI)
		rg.wantStarts("triggered run after a failure", 0, minI)
	})
}

func TestTriggerAfterQuietPeriodRunsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const minI = time.Second
		rg := newRig(t, minI, time.Hour, time.Hour)
		rg.start()
		rg.step(minI + 200*ms) // quiet for longer than minInterval
		rg.trigger()
		rg.wantStarts("a trigger after a quiet period", 0, minI+200*ms)
	})
}

func TestTriggerBeforeRunIsServedByFirstRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const minI = 50 * ms
		rg := newRig(t, minI, time.Hour, time.Hour)
		rg.r.Trigger()
		rg.r.Trigger()
		rg.start()
		rg.step(10 * minI)
		rg.wantStarts("triggers made before Run were served by the first run", 0)
	})
}

// Run returns when its context ends, but only after a run in progress has finished;
// nothing runs after it returned.
func TestRunReturnsWhenContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rg := newRig(t, 10*ms, 20*ms, 20*ms)
		rg.start()
		rg.gates[2] = make(chan struct{})
		rg.step(20 * ms) // the second run starts and is held inside fn
		rg.cancel()
		synctest.Wait()
		if rg.returned() {
			t.Fatal("Run returned while a run was in progress")
		}
		close(rg.gates[2])
		synctest.Wait()
		if !rg.returned() {
			t.Fatal("Run did not return after the context ended and the run finished")
		}
		rg.r.Trigger()
		rg.step(time.Second)
		rg.wantStarts("after Run returned", 0, 20*ms)
	})
}

// The min interval runs from start to start: a sync that takes most of it does not
// push the next one back by its own duration (the burst lag would grow by it), and
// a sync longer than the interval is still followed by a quiet gap of a tenth of it.
func TestMinIntervalIsMeasuredFromStartToStart(t *testing.T) {
	const minI = 200 * ms
	for _, tc := range []struct {
		name    string
		runTime time.Duration
		gap     time.Duration // between starts under constant triggering
	}{
		{"run shorter than the interval", 120 * ms, minI},
		{"run longer than the interval", 300 * ms, 300*ms + minI/10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rg := newRig(t, minI, time.Hour, time.Hour)
				rg.runTime = tc.runTime
				rg.start()
				for range 400 { // 2s in steps of 5ms, a trigger at each
					rg.trigger()
					rg.step(5 * ms)
				}
				rg.mu.Lock()
				defer rg.mu.Unlock()
				if len(rg.starts) < 4 {
					t.Fatalf("only %d runs in 2s of constant triggering", len(rg.starts))
				}
				for i := 1; i < len(rg.starts); i++ {
					if gap := rg.starts[i].Sub(rg.starts[i-1]); gap != tc.gap {
						t.Errorf("runs %d and %d started %v apart, want %v (starts %v)", i-1, i, gap, tc.gap, rg.offsets())
					}
				}
			})
		})
	}
}

// A skipped run (the proxy before its source synced) does not hold the next run back:
// the trigger that follows it runs at once, not a minInterval after the skipped one.
func TestSkippedRunDoesNotCountForMinInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rg := newRig(t, time.Hour, time.Hour, 2*time.Hour)
		rg.results[1] = ErrSkipped
		rg.start()
		rg.step(time.Minute)
		rg.wantStarts("nothing triggered after the skip", 0)
		rg.trigger()
		rg.wantStarts("the trigger after a skipped run", 0, time.Minute)
		rg.trigger()
		rg.step(time.Hour - ms)
		rg.wantStarts("a trigger within minInterval of a real run", 0, time.Minute)
		rg.step(ms)
		rg.wantStarts("the trigger, minInterval after the real run", 0, time.Minute, time.Hour+time.Minute)
	})
}

func TestFailedRunsBackOffUpToRetryInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const minI, retryI = 100 * ms, 10 * time.Second
		rg := newRig(t, minI, retryI, time.Hour)
		for n := 1; n <= 6; n++ {
			rg.results[n] = errors.New("injected failure")
		}
		rg.start()
		// Waits of 1, 2, 4, 8 s, then the 10 s cap: failed runs at 0, 1, 3, 7, 15,
		// 25 s, and the seventh (successful) run at 35 s.
		want := []time.Duration{0}
		for _, wait := range []time.Duration{1, 2, 4, 8, 10, 10} {
			wait *= time.Second
			rg.step(wait - ms)
			rg.wantStarts("before the retry is due", want...)
			rg.step(ms)
			want = append(want, want[len(want)-1]+wait)
			rg.wantStarts("retry after a backoff", want...)
		}
		rg.step(time.Hour - ms)
		rg.wantStarts("nothing within maxInterval of the successful run", want...)
	})
}

func TestBackoffStartsOverAfterASuccess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const minI, retryI = 100 * ms, 10 * time.Second
		rg := newRig(t, minI, retryI, time.Hour)
		rg.results[1] = errors.New("injected failure")
		rg.results[2] = errors.New("injected failure")
		rg.results[4] = errors.New("injected failure")
		rg.start()
		rg.step(time.Second)     // run 2 fails at 1 s
		rg.step(2 * time.Second) // run 3 succeeds at 3 s
		rg.trigger()             // run 4, minInterval later, fails at 3.1 s
		rg.step(100 * ms)
		rg.step(time.Second) // a fresh backoff: retried 1 s later, not 4 s
		rg.wantStarts("retry after a success starts from firstRetry again", 0, time.Second, 3*time.Second, 3100*ms, 4100*ms)
	})
}

func TestRetryNeverFasterThanMinInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const minI, retryI = 3 * time.Second, 30 * time.Second
		rg := newRig(t, minI, retryI, time.Hour)
		rg.results[1] = errors.New("injected failure")
		rg.start()
		rg.step(3*time.Second - ms)
		rg.wantStarts("before minInterval", 0)
		rg.step(ms)
		rg.wantStarts("first retry at minInterval, the longer of the two", 0, 3*time.Second)
	})
}
