// Package runner schedules the proxy's sync function: runs are rate limited to one
// per minInterval, bursts of triggers collapse into a single run, failed runs are
// retried, and a run happens at least once per maxInterval even when nothing changed.
package runner

import (
	"context"
	"errors"
	"sync"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Runner calls one function on a schedule bounded by three intervals. All runs
// happen on the goroutine that called Run, so the function never overlaps itself.
type Runner struct {
	name          string
	fn            func(context.Context) error
	clock         clock.Clock
	minInterval   time.Duration
	retryInterval time.Duration
	maxInterval   time.Duration

	// triggers holds at most one pending request: a Trigger that finds it full is
	// already covered by the run that request will cause.
	triggers chan struct{}
	// running serialises Run calls so a second Run cannot start fn concurrently.
	running sync.Mutex
	// failures counts the runs that failed in a row (only Run's goroutine uses it).
	failures int
}

// ErrSkipped is what fn returns when it had nothing it could do yet (the proxy before
// its source delivered the initial state): the run does not count, so the next one is
// not held back by minInterval. Without it the first real sync of a starting proxy
// waited a whole minInterval behind the no-op run at start.
var ErrSkipped = errors.New("run skipped")

// never stands in for a disabled interval: far enough away that it never fires.
const never = 100 * 365 * 24 * time.Hour

// firstRetry is the shortest wait before retrying a failed run. Failures are mostly
// transient (another program holding the xtables lock for a few seconds, an
// interrupted nft transaction): retrying soon and then backing off means the kernel
// catches up within about a second of the cause going away, where a fixed retry of
// the sync period (30 s by default, upstream's choice) leaves every change queued
// behind it waiting that long; the doubling keeps a persistent failure from costing
// more than one attempt per retryInterval.
const firstRetry = time.Second

// New returns a Runner that calls fn, with the context Run was given:
//   - once as soon as Run starts;
//   - whenever Trigger is called, but never within minInterval of the end of the
//     previous run: triggers in between are coalesced into one run at the earliest
//     allowed time;
//   - after a run that returned an error, again after a backoff that starts at
//     firstRetry (or minInterval, if longer) and doubles with each failure in a row,
//     up to retryInterval (sooner if triggered);
//   - at least every maxInterval.
//
// All times are read from clk (clock.RealClock in production, a fake in tests).
// A retryInterval or maxInterval <= 0 disables that timer. The min interval is
// measured from the start of one run to the start of the next, as upstream's
// BoundedFrequencyRunner does: a change that arrives while a sync runs waits at most
// minInterval from that sync's start, so the kernel lags the API by at most
// minInterval plus the sync's duration. A sync that takes longer than minInterval
// is still followed by a quiet gap (a tenth of minInterval), so the loop cannot hold
// the CPU without a break.
func New(name string, fn func(context.Context) error, clk clock.Clock, minInterval, retryInterval, maxInterval time.Duration) *Runner {
	if retryInterval <= 0 {
		retryInterval = never
	}
	if maxInterval <= 0 {
		maxInterval = never
	}
	return &Runner{
		name:          name,
		fn:            fn,
		clock:         clk,
		minInterval:   max(minInterval, 0),
		retryInterval: retryInterval,
		maxInterval:   maxInterval,
		triggers:      make(chan struct{}, 1),
	}
}

// Trigger asks for a run as soon as minInterval allows. It never blocks and may be
// called from any goroutine, before or while Run is running.
func (r *Runner) Trigger() {
	select {
	case r.triggers <- struct{}{}:
	default:
	}
}

// Run calls fn according to the schedule until ctx ends. It blocks; a run in
// progress when ctx ends is allowed to finish. It logs to ctx's logger.
func (r *Runner) Run(ctx context.Context) {
	r.running.Lock()
	defer r.running.Unlock()
	logger := klog.FromContext(ctx).WithValues("runner", r.name)
	ctx = klog.NewContext(ctx, logger)

	due := r.clock.Now() // the first run happens at once
	// lastStart and lastEnd are zero until the first run: no interval to respect yet.
	var lastStart, lastEnd time.Time
	for {
		if ctx.Err() != nil {
			logger.V(2).Info("Runner stopped")
			return
		}
		now := r.clock.Now()
		if !now.Before(due) {
			// A trigger that arrived before this run starts is served by it.
			select {
			case <-r.triggers:
			default:
			}
			due = r.run(ctx, &lastStart, &lastEnd)
			continue
		}
		// A new timer per wait: a fired or stopped one is never reused, so no stale
		// tick can start a run early, whatever clock it comes from.
		timer := r.clock.NewTimer(due.Sub(now))
		select {
		case <-ctx.Done():
		case <-r.triggers:
			earliest := r.earliestAfter(lastStart, lastEnd)
			if now := r.clock.Now(); earliest.Before(now) {
				earliest = now
			}
			if earliest.Before(due) {
				due = earliest
			}
		case <-timer.C():
			// The loop compares the time with due again.
		}
		timer.Stop()
	}
}

// run calls fn once, moves lastStart and lastEnd to this run (unless it was
// skipped) and returns when the next run is due without a trigger.
func (r *Runner) run(ctx context.Context, lastStart, lastEnd *time.Time) time.Time {
	start := r.clock.Now()
	err := r.runOnce(ctx)
	end := r.clock.Now()
	if errors.Is(err, ErrSkipped) {
		// Not a run: the next trigger may start one at once.
		return end.Add(r.maxInterval)
	}
	*lastStart, *lastEnd = start, end
	wait := r.maxInterval
	if err != nil {
		r.failures++
		wait = min(wait, r.retryAfter(r.failures))
	} else {
		r.failures = 0
	}
	due := end.Add(wait)
	if earliest := r.earliestAfter(start, end); due.Before(earliest) {
		due = earliest
	}
	return due
}

// retryAfter is the wait after the nth failed run in a row: firstRetry (at least
// minInterval) doubled n-1 times, capped at retryInterval.
func (r *Runner) retryAfter(n int) time.Duration {
	wait := min(max(firstRetry, r.minInterval), r.retryInterval)
	for i := 1; i < n && wait < r.retryInterval; i++ {
		wait *= 2
	}
	return min(wait, r.retryInterval)
}

// earliestAfter is the earliest start allowed after a run that started and ended at
// the given times: minInterval after its start, and a tenth of it after its end.
func (r *Runner) earliestAfter(lastStart, lastEnd time.Time) time.Time {
	earliest := lastStart.Add(r.minInterval)
	if quiet := lastEnd.Add(r.minInterval / 10); quiet.After(earliest) {
		earliest = quiet
	}
	return earliest
}

// runOnce calls fn and logs how it went.
func (r *Runner) runOnce(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	start := r.clock.Now()
	err := r.fn(ctx)
	elapsed := r.clock.Since(start)
	if errors.Is(err, ErrSkipped) {
		logger.V(4).Info("Run skipped")
		return err
	}
	if err != nil {
		if r.retryInterval < never {
			logger.Error(err, "Run failed, will retry", "elapsed", elapsed, "retryIn", r.retryAfter(r.failures+1), "failuresInARow", r.failures+1)
		} else {
			logger.Error(err, "Run failed, will run again when triggered", "elapsed", elapsed)
		}
		return err
	}
	logger.V(4).Info("Run finished", "elapsed", elapsed)
	return nil
}
