// Package proxy is kproxy's sync loop: it owns the model tracker that sources feed,
// and turns each batch of changes into one sync of every backend (one per IP family),
// followed by conntrack cleanup. It knows nothing of how a backend programs the kernel.
package proxy

import (
	"context"
	"errors"
	"sync"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kproxy/kproxy/internal/conntrack"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/runner"
)

// Backend programs one IP family's Services into the kernel. The contexts it is given
// carry the logger and end when the loop stops.
type Backend interface {
	Family() model.Family
	// Sync writes the snapshot: all of it when full, else what changed.
	Sync(ctx context.Context, snap *model.Snapshot, full bool) error
	// Flushed reports that the backend's rules were removed behind its back.
	Flushed(ctx context.Context) bool
}

// Background is implemented by a Backend with work of its own between syncs (IPVS
// mode drains removed real servers). Run runs it alongside the loop, with the loop's
// context, and returns only after it has returned.
type Background interface {
	RunBackground(ctx context.Context)
}

// ConntrackCleaner deletes stale conntrack entries; *conntrack.Cleaner is one.
type ConntrackCleaner interface {
	Clean(ctx context.Context, f model.Family, targets []conntrack.Target) (int, error)
}

// Options configure the loop.
type Options struct {
	// MinSyncPeriod is the least time between two syncs; SyncPeriod is the interval of
	// full resyncs (and of retries after a failure).
	MinSyncPeriod, SyncPeriod time.Duration
	// FlushCheckInterval is how often backends are asked whether they were flushed.
	// The check must be cheap: recovery from a flush takes up to this long plus one
	// full sync (and MinSyncPeriod, when a sync ran just before).
	FlushCheckInterval time.Duration
	// SyncFailed, if set, is called for each backend whose sync failed (metrics
	// that depend on the mode).
	SyncFailed func(f model.Family, full bool, err error)
	Conntrack  ConntrackCleaner
	// ResolveNode, if set, resolves the node's parameters for each sync
	// (nodeaddr.Resolver.Resolve); backends read them from the snapshot.
	ResolveNode func(*model.Node) map[model.Family]model.NodeParams
	// AfterSync, if set, is called after each successful sync (health, metrics).
	AfterSync func(ctx context.Context, snap *model.Snapshot, full bool, took time.Duration)
	// Problems, if set, hears each part of an object that cannot be programmed (the
	// tracker logs it too); cmd/kproxy records it as an Event.
	Problems model.Reporter
	// Clock is where the loop reads the time and makes its timers; nil means the
	// real clock.
	Clock clock.WithTicker
}

// Proxy runs the sync loop.
type Proxy struct {
	opts     Options
	clock    clock.WithTicker
	metrics  *metrics.Metrics
	tracker  *model.Tracker
	backends []Backend
	runner   *runner.Runner

	// Sync-loop state: only the runner's goroutine touches these.
	needFull bool
	lastFull time.Time

	mu       sync.Mutex
	queuedAt time.Time // first change not yet synced (zero when none)
	// lastQueuedAt is the latest change; one that arrives while a sync runs is not in
	// its snapshot and stays queued after it.
	lastQueuedAt time.Time
	syncedAt     time.Time // last successful sync
	forceFull    bool      // a backend was flushed: the next sync is full
	flushedAt    time.Time // when a flush was noticed, until the rules are back
	failing      bool      // the last sync failed: the runner retries it, watchers wait
}

// New returns the loop for the node named nodeName, which reports to m. m is the
// loop's own: its pending-changes gauges read this loop's tracker.
func New(nodeName string, backends []Backend, m *metrics.Metrics, opts Options) *Proxy {
	clk := opts.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	p := &Proxy{opts: opts, clock: clk, metrics: m, backends: backends, needFull: true}
	p.tracker = model.NewTracker(nodeName, p.queue, opts.Problems)
	p.runner = runner.New("sync", p.sync, clk, opts.MinSyncPeriod, opts.SyncPeriod, opts.SyncPeriod)
	m.SetPendingSource(p.tracker.Pending)
	return p
}

// Handler is what sources feed.
func (p *Proxy) Handler() model.Handler { return p.tracker }

func (p *Proxy) queue() {
	p.mu.Lock()
	p.lastQueuedAt = p.clock.Now()
	if p.queuedAt.IsZero() {
		p.queuedAt = p.lastQueuedAt
		for _, b := range p.backends {
			p.metrics.SyncProxyRulesLastQueuedTimestamp.WithLabelValues(b.Family().String()).Set(float64(p.queuedAt.Unix()))
		}
	}
	p.mu.Unlock()
	p.runner.Trigger()
}

// Status reports when a change was first queued without being synced yet (zero if
// none) and when the last successful sync finished, for health checks.
func (p *Proxy) Status() (queuedAt, syncedAt time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queuedAt, p.syncedAt
}

// Run runs the loop until ctx ends, logging to ctx's logger. It returns once every
// goroutine it started (the flush watch, the backends' background work) has ended;
// rules stay in the kernel.
func (p *Proxy) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if p.opts.FlushCheckInterval > 0 {
		wg.Go(func() { p.watchFlushes(ctx) })
	}
	for _, b := range p.backends {
		if bg, ok := b.(Background); ok {
			wg.Go(func() { bg.RunBackground(ctx) })
		}
	}
	p.runner.Run(ctx)
}

func (p *Proxy) watchFlushes(ctx context.Context) {
	logger := klog.FromContext(ctx)
	t := p.clock.NewTicker(p.opts.FlushCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		p.mu.Lock()
		waiting := p.forceFull || p.failing || !p.flushedAt.IsZero()
		p.mu.Unlock()
		if waiting {
			// A full sync is already due or running (the rules are not back before
			// it ends), or failing and retried every SyncPeriod: asking again would
			// only repeat the work several times a second.
			continue
		}
		for _, b := range p.backends {
			if b.Flushed(ctx) {
				logger.Info("Rules were flushed behind kproxy's back; restoring them", "family", b.Family())
				p.mu.Lock()
				p.forceFull = true
				if p.flushedAt.IsZero() {
					p.flushedAt = p.clock.Now()
				}
				p.mu.Unlock()
				p.queue()
				break
			}
		}
	}
}

func (p *Proxy) sync(ctx context.Context) error {
	if !p.tracker.Synced() {
		// Never program a partial view: a restart must not drop rules the source has
		// not delivered yet. The source's OnSynced triggers the first real sync.
		return runner.ErrSkipped
	}
	// The queued time is cleared only when a sync succeeds: health checks during a
	// failing sync must keep seeing the change waiting.
	p.mu.Lock()
	if p.forceFull {
		p.needFull, p.forceFull = true, false
	}
	p.mu.Unlock()

	logger := klog.FromContext(ctx)
	start := p.clock.Now()
	p.mu.Lock()
	snapAt := p.clock.Now()
	p.mu.Unlock()
	snap := p.tracker.Snapshot()
	if p.opts.ResolveNode != nil {
		snap.Nodes = p.opts.ResolveNode(snap.Node)
	}
	full := p.needFull || snap.NodeChanged || p.clock.Since(p.lastFull) >= fullSyncInterval(p.opts.SyncPeriod, snap.EndpointCount)
	p.metrics.ServiceChangesTotal.Add(float64(snap.ServiceChanges))
	p.metrics.EndpointChangesTotal.Add(float64(snap.EndpointChanges))
	var errs []error
	for _, b := range p.backends {
		bstart := p.clock.Now()
		if err := b.Sync(ctx, snap, full); err != nil {
			errs = append(errs, err)
			if p.opts.SyncFailed != nil {
				p.opts.SyncFailed(b.Family(), full, err)
			}
			continue
		}
		p.observeSync(b.Family(), full, bstart, snap.TriggerTimes)
	}
	if err := errors.Join(errs...); err != nil {
		logger.Error(err, "Sync failed; the next sync rewrites every rule", "full", full)
		p.needFull = true
		p.tracker.MarkAllChanged()
		p.mu.Lock()
		p.failing = true
		p.mu.Unlock()
		return err
	}
	if full {
		p.needFull, p.lastFull = false, start
	}
	p.cleanConntrack(ctx, snap)
	took := p.clock.Since(start)
	p.mu.Lock()
	p.syncedAt = p.clock.Now()
	p.failing = false
	p.queuedAt = time.Time{}
	if p.lastQueuedAt.After(snapAt) {
		p.queuedAt = p.lastQueuedAt
	}
	flushedAt := p.flushedAt
	if full {
		p.flushedAt = time.Time{}
	}
	p.mu.Unlock()
	if full && !flushedAt.IsZero() {
		logger.Info("Rules restored after a flush", "sinceNoticed", p.syncedAt.Sub(flushedAt), "syncTook", took)
	}
	if p.opts.AfterSync != nil {
		p.opts.AfterSync(ctx, snap, full, took)
	}
	return nil
}

func (p *Proxy) cleanConntrack(ctx context.Context, snap *model.Snapshot) {
	if p.opts.Conntrack == nil {
		return
	}
	for _, b := range p.backends {
		targets := StaleFlows(snap, b.Family())
		if len(targets) == 0 {
			continue
		}
		start := p.clock.Now()
		n, err := p.opts.Conntrack.Clean(ctx, b.Family(), targets)
		p.metrics.ConntrackReconcilerSyncDuration.WithLabelValues(b.Family().String()).Observe(p.clock.Since(start).Seconds())
		p.metrics.ConntrackReconcilerDeletedEntriesTotal.WithLabelValues(b.Family().String()).Add(float64(n))
		logger := klog.FromContext(ctx)
		if err != nil {
			logger.Error(err, "Conntrack cleanup failed", "family", b.Family())
		}
		logger.V(2).Info("Deleted stale conntrack entries", "family", b.Family(), "entries", n, "targets", len(targets))
	}
}

// observeSync records one family's successful sync, and the network programming latency
// of the EndpointSlice changes it carried (from their last-change-trigger-time).
func (p *Proxy) observeSync(f model.Family, full bool, start time.Time, triggers []time.Time) {
	fam := f.String()
	now := p.clock.Now()
	took := now.Sub(start).Seconds()
	p.metrics.SyncProxyRulesLatency.WithLabelValues(fam).Observe(took)
	if full {
		p.metrics.SyncFullProxyRulesLatency.WithLabelValues(fam).Observe(took)
	} else {
		p.metrics.SyncPartialProxyRulesLatency.WithLabelValues(fam).Observe(took)
	}
	p.metrics.SyncProxyRulesLastTimestamp.WithLabelValues(fam).Set(float64(now.Unix()))
	for _, t := range triggers {
		p.metrics.NetworkProgrammingLatency.WithLabelValues(fam).Observe(now.Sub(t).Seconds())
	}
}

// largeRuleset is the number of endpoints beyond which full resyncs become hourly, as
// in upstream's "large cluster mode": at that size a full rewrite costs seconds of CPU
// and delays the changes queued behind it, and flushes behind kproxy's back are caught
// by the flush watch anyway.
const largeRuleset = 1000

// fullSyncInterval is how often the rules are rewritten in full even without changes.
func fullSyncInterval(syncPeriod time.Duration, endpoints int) time.Duration {
	if endpoints > largeRuleset {
		return max(syncPeriod, time.Hour)
	}
	return syncPeriod
}
