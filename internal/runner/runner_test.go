package runner

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a fn that records when each run started, fails on request and checks
// that runs never overlap.
type recorder struct {
	mu      sync.Mutex
	starts  []time.Time
	started chan time.Time // one value per run, buffered generously
	active  atomic.Int32
	overlap atomic.Bool
	// failRuns lists the 1-based run numbers that return an error.
	failRuns map[int]bool
	// skipRuns lists the 1-based run numbers that return ErrSkipped.
	skipRuns map[int]bool
}

func newRecorder(failRuns ...int) *recorder {
	r := &recorder{started: make(chan time.Time, 1000), failRuns: map[int]bool{}, skipRuns: map[int]bool{}}
	for _, n := range failRuns {
		r.failRuns[n] = true
	}
	return r
}

func (r *recorder) fn() error {
	if r.active.Add(1) > 1 {
		r.overlap.Store(true)
	}
	defer r.active.Add(-1)
	now := time.Now()
	r.mu.Lock()
	r.starts = append(r.starts, now)
	n := len(r.starts)
	r.mu.Unlock()
	r.started <- now
	time.Sleep(2 * time.Millisecond) // a run takes some time, like a real sync
	if r.failRuns[n] {
		return errors.New("injected failure")
	}
	if r.skipRuns[n] {
		return ErrSkipped
	}
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.starts)
}

func (r *recorder) snapshot() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.starts...)
}

// waitRun returns the start time of the next run, failing the test if none comes
// within timeout.
func (r *recorder) waitRun(t *testing.T, timeout time.Duration, what string) time.Time {
	t.Helper()
	select {
	case at := <-r.started:
		return at
	case <-time.After(timeout):
		t.Fatalf("%s: no run within %v", what, timeout)
		return time.Time{}
	}
}

// expectNoRun fails if a run starts within d.
func (r *recorder) expectNoRun(t *testing.T, d time.Duration, what string) {
	t.Helper()
	select {
	case at := <-r.started:
		t.Fatalf("%s: unexpected run at %v", what, at.Format(time.StampMicro))
	case <-time.After(d):
	}
}

// start runs the runner until the test ends and checks fn never overlapped itself.
func start(t *testing.T, rec *recorder, minI, retryI, maxI time.Duration) *Runner {
	t.Helper()
	r := New(t.Name(), rec.fn, minI, retryI, maxI)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return after the context ended")
		}
		if rec.overlap.Load() {
			t.Errorf("fn ran concurrently with itself")
		}
	})
	return r
}

func TestRunsOnceAtStartThenWaits(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	start(t, rec, 10*time.Millisecond, time.Hour, time.Hour)
	rec.waitRun(t, 2*time.Second, "first run after Run starts")
	rec.expectNoRun(t, 300*time.Millisecond, "nothing triggered")
}

func TestBurstOfTriggersIsCoalesced(t *testing.T) {
	t.Parallel()
	const minI = 100 * time.Millisecond
	rec := newRecorder()
	r := start(t, rec, minI, time.Hour, time.Hour)
	rec.waitRun(t, 2*time.Second, "first run")
	time.Sleep(2 * minI) // let the min interval pass so the burst may run at once

	before := rec.count()
	for range 100 {
		r.Trigger()
	}
	// The burst may cause one run at once plus one for triggers that arrived while
	// it was running; without coalescing there would be a run per min interval.
	rec.waitRun(t, 2*time.Second, "run after the burst")
	time.Sleep(8 * minI)
	if got := rec.count() - before; got < 1 || got > 2 {
		t.Fatalf("100 triggers in a burst caused %d runs, want 1 or 2", got)
	}
}

func TestTriggersDuringRunAreServedByOneMoreRun(t *testing.T) {
	t.Parallel()
	const minI = 50 * time.Millisecond
	rec := newRecorder()
	entered, block := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	first.Store(true)
	slow := func() error {
		if first.Swap(false) {
			close(entered)
			<-block // hold the first run open while triggers arrive
		}
		return rec.fn()
	}
	r := New(t.Name(), slow, minI, time.Hour, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	<-entered
	for range 10 {
		r.Trigger()
	}
	close(block)
	rec.waitRun(t, 2*time.Second, "first run")
	rec.waitRun(t, 2*time.Second, "the run owed to triggers that arrived during the first")
	rec.expectNoRun(t, 6*minI, "all triggers already served")
}

func TestMinIntervalIsHonoured(t *testing.T) {
	t.Parallel()
	const minI = 120 * time.Millisecond
	const window = 1500 * time.Millisecond
	rec := newRecorder()
	r := start(t, rec, minI, time.Hour, time.Hour)
	rec.waitRun(t, 2*time.Second, "first run")

	// Trigger far more often than minInterval allows.
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		r.Trigger()
		time.Sleep(3 * time.Millisecond)
	}
	starts := rec.snapshot()
	if len(starts) < 3 {
		t.Fatalf("only %d runs in %v of constant triggering with minInterval %v", len(starts), window, minI)
	}
	for i := 1; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < minI {
			t.Errorf("runs %d and %d started %v apart, want at least %v", i-1, i, gap, minI)
		}
	}
	if most := int(window/minI) + 2; len(starts) > most {
		t.Errorf("%d runs in %v, more than the %d minInterval %v allows", len(starts), window, most, minI)
	}
}

func TestFailedRunIsRetried(t *testing.T) {
	t.Parallel()
	const retryI = 200 * time.Millisecond
	rec := newRecorder(1) // the first run fails
	start(t, rec, 10*time.Millisecond, retryI, time.Hour)
	first := rec.waitRun(t, 2*time.Second, "first run")
	retry := rec.waitRun(t, 5*time.Second, "retry after failure")
	if gap := retry.Sub(first); gap < retryI {
		t.Fatalf("retry came %v after the failure, before retryInterval %v", gap, retryI)
	}
	// The retry succeeded, so the next run is maxInterval (an hour) away.
	rec.expectNoRun(t, 3*retryI, "after a successful retry")
}

func TestTriggerBeatsRetryInterval(t *testing.T) {
	t.Parallel()
	const minI, retryI = 50 * time.Millisecond, 30 * time.Second
	rec := newRecorder(1)
	r := start(t, rec, minI, retryI, time.Hour)
	first := rec.waitRun(t, 2*time.Second, "first run")
	r.Trigger()
	next := rec.waitRun(t, 5*time.Second, "triggered run after a failure")
	if gap := next.Sub(first); gap < minI {
		t.Fatalf("triggered run came %v after the previous one, within minInterval %v", gap, minI)
	}
}

func TestMaxIntervalTicks(t *testing.T) {
	t.Parallel()
	const maxI = 200 * time.Millisecond
	rec := newRecorder()
	start(t, rec, 10*time.Millisecond, time.Hour, maxI)
	prev := rec.waitRun(t, 2*time.Second, "first run")
	for i := range 3 {
		at := rec.waitRun(t, 10*maxI, "periodic run")
		if gap := at.Sub(prev); gap < maxI {
			t.Fatalf("periodic run %d came %v after the previous, before maxInterval %v", i, gap, maxI)
		}
		prev = at
	}
}

func TestTriggerAfterQuietPeriodRunsAtOnce(t *testing.T) {
	t.Parallel()
	const minI = time.Second
	rec := newRecorder()
	r := start(t, rec, minI, time.Hour, time.Hour)
	rec.waitRun(t, 2*time.Second, "first run")
	time.Sleep(minI + 200*time.Millisecond) // quiet for longer than minInterval

	triggered := time.Now()
	r.Trigger()
	at := rec.waitRun(t, 3*time.Second, "run after trigger")
	// Waiting for the min interval again would take a full second.
	if lag := at.Sub(triggered); lag > minI/2 {
		t.Fatalf("run started %v after the trigger, want well under minInterval %v", lag, minI)
	}
}

func TestTriggerBeforeRunIsServedByFirstRun(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	r := New(t.Name(), rec.fn, 50*time.Millisecond, time.Hour, time.Hour)
	r.Trigger()
	r.Trigger()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	rec.waitRun(t, 2*time.Second, "first run")
	rec.expectNoRun(t, 300*time.Millisecond, "triggers made before Run were served by the first run")
}

func TestRunReturnsWhenContextEnds(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	r := New(t.Name(), rec.fn, 10*time.Millisecond, 20*time.Millisecond, 20*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	rec.waitRun(t, 2*time.Second, "first run")
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	n := rec.count()
	r.Trigger()
	time.Sleep(100 * time.Millisecond)
	if got := rec.count(); got != n {
		t.Fatalf("fn ran %d more times after Run returned", got-n)
	}
}

// The min interval runs from start to start: a sync that takes most of it does not
// push the next one back by its own duration (the burst lag would grow by it), and
// a sync longer than the interval is still followed by a quiet gap.
func TestMinIntervalIsMeasuredFromStartToStart(t *testing.T) {
	t.Parallel()
	const minI = 200 * time.Millisecond
	for _, tc := range []struct {
		name    string
		runTime time.Duration
		// minGap and maxGap bound the time between starts under constant triggering.
		minGap, maxGap time.Duration
	}{
		{"run shorter than the interval", 120 * time.Millisecond, minI, minI + 100*time.Millisecond},
		{"run longer than the interval", 300 * time.Millisecond, 300*time.Millisecond + minI/10, 300*time.Millisecond + minI/10 + 100*time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var starts []time.Time
			fn := func() error {
				mu.Lock()
				starts = append(starts, time.Now())
				mu.Unlock()
				time.Sleep(tc.runTime)
				return nil
			}
			r := New(t.Name(), fn, minI, time.Hour, time.Hour)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { r.Run(ctx); close(done) }()
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				r.Trigger()
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			<-done
			mu.Lock()
			defer mu.Unlock()
			if len(starts) < 4 {
				t.Fatalf("only %d runs in 2s of constant triggering", len(starts))
			}
			// The first gap follows the initial run; the rest are steady state.
			for i := 2; i < len(starts); i++ {
				gap := starts[i].Sub(starts[i-1])
				if gap < tc.minGap || gap > tc.maxGap {
					t.Errorf("runs %d and %d started %v apart, want %v..%v", i-1, i, gap, tc.minGap, tc.maxGap)
				}
			}
		})
	}
}

// A skipped run (the proxy before its source synced) does not hold the next run back:
// the trigger that follows it runs at once, not a minInterval after the skipped one.
func TestSkippedRunDoesNotCountForMinInterval(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	rec.skipRuns[1] = true
	r := start(t, rec, time.Hour, time.Hour, time.Hour)
	rec.waitRun(t, 2*time.Second, "the skipped first run")
	rec.expectNoRun(t, 100*time.Millisecond, "nothing triggered after the skip")
	r.Trigger()
	rec.waitRun(t, 2*time.Second, "the trigger after a skipped run")
	r.Trigger()
	rec.expectNoRun(t, 300*time.Millisecond, "a trigger within minInterval of a real run")
}
