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

	"github.com/kproxy/kproxy/internal/conntrack"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/runner"
)

// Backend programs one IP family's Services into the kernel.
type Backend interface {
	Family() model.Family
	// Sync writes the snapshot: all of it when full, else what changed.
	Sync(snap *model.Snapshot, full bool) error
	// Flushed reports that the backend's rules were removed behind its back.
	Flushed() bool
}

// ConntrackCleaner deletes stale conntrack entries; *conntrack.Cleaner is one.
type ConntrackCleaner interface {
	Clean(f model.Family, targets []conntrack.Target) (int, error)
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
	AfterSync func(snap *model.Snapshot, full bool, took time.Duration)
}

// Proxy runs the sync loop.
type Proxy struct {
	opts     Options
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

// New returns the loop for the node named nodeName.
func New(nodeName string, backends []Backend, opts Options) *Proxy {
	p := &Proxy{opts: opts, backends: backends, needFull: true}
	p.tracker = model.NewTracker(nodeName, p.queue)
	p.runner = runner.New("sync", p.sync, opts.MinSyncPeriod, opts.SyncPeriod, opts.SyncPeriod)
	metrics.RegisterPending(
		func() float64 { s, _ := p.tracker.Pending(); return float64(s) },
		func() float64 { _, e := p.tracker.Pending(); return float64(e) })
	return p
}

// Handler is what sources feed.
func (p *Proxy) Handler() model.Handler { return p.tracker }

func (p *Proxy) queue() {
	p.mu.Lock()
	p.lastQueuedAt = time.Now()
	if p.queuedAt.IsZero() {
		p.queuedAt = p.lastQueuedAt
		for _, b := range p.backends {
			metrics.SyncProxyRulesLastQueuedTimestamp.WithLabelValues(b.Family().String()).Set(float64(p.queuedAt.Unix()))
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

// Run runs the loop until ctx ends. Rules stay in the kernel when it returns.
func (p *Proxy) Run(ctx context.Context) {
	if p.opts.FlushCheckInterval > 0 {
		go p.watchFlushes(ctx)
	}
	p.runner.Run(ctx)
}

func (p *Proxy) watchFlushes(ctx context.Context) {
	t := time.NewTicker(p.opts.FlushCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
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
			if b.Flushed() {
				klog.InfoS("Rules were flushed behind kproxy's back; restoring them", "family", b.Family())
				p.mu.Lock()
				p.forceFull = true
				if p.flushedAt.IsZero() {
					p.flushedAt = time.Now()
				}
				p.mu.Unlock()
				p.queue()
				break
			}
		}
	}
}

func (p *Proxy) sync() error {
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

	start := time.Now()
	p.mu.Lock()
	snapAt := time.Now()
	p.mu.Unlock()
	snap := p.tracker.Snapshot()
	if p.opts.ResolveNode != nil {
		snap.Nodes = p.opts.ResolveNode(snap.Node)
	}
	full := p.needFull || snap.NodeChanged || time.Since(p.lastFull) >= fullSyncInterval(p.opts.SyncPeriod, snap.EndpointCount)
	metrics.ServiceChangesTotal.Add(float64(snap.ServiceChanges))
	metrics.EndpointChangesTotal.Add(float64(snap.EndpointChanges))
	var errs []error
	for _, b := range p.backends {
		bstart := time.Now()
		if err := b.Sync(snap, full); err != nil {
			errs = append(errs, err)
			if p.opts.SyncFailed != nil {
				p.opts.SyncFailed(b.Family(), full, err)
			}
			continue
		}
		observeSync(b.Family(), full, bstart, snap.TriggerTimes)
	}
	if err := errors.Join(errs...); err != nil {
		klog.ErrorS(err, "Sync failed; the next sync rewrites every rule", "full", full)
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
	p.cleanConntrack(snap)
	took := time.Since(start)
	p.mu.Lock()
	p.syncedAt = time.Now()
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
		klog.InfoS("Rules restored after a flush", "sinceNoticed", p.syncedAt.Sub(flushedAt), "syncTook", took)
	}
	if p.opts.AfterSync != nil {
		p.opts.AfterSync(snap, full, took)
	}
	return nil
}

func (p *Proxy) cleanConntrack(snap *model.Snapshot) {
	if p.opts.Conntrack == nil {
		return
	}
	for _, b := range p.backends {
		targets := StaleFlows(snap, b.Family())
		if len(targets) == 0 {
			continue
		}
		start := time.Now()
		n, err := p.opts.Conntrack.Clean(b.Family(), targets)
		metrics.ConntrackReconcilerSyncDuration.WithLabelValues(b.Family().String()).Observe(time.Since(start).Seconds())
		metrics.ConntrackReconcilerDeletedEntriesTotal.WithLabelValues(b.Family().String()).Add(float64(n))
		if err != nil {
			klog.ErrorS(err, "Conntrack cleanup failed", "family", b.Family())
		}
		klog.V(2).InfoS("Deleted stale conntrack entries", "family", b.Family(), "entries", n, "targets", len(targets))
	}
}

// observeSync records one family's successful sync, and the network programming latency
// of the EndpointSlice changes it carried (from their last-change-trigger-time).
func observeSync(f model.Family, full bool, start time.Time, triggers []time.Time) {
	fam := f.String()
	now := time.Now()
	took := now.Sub(start).Seconds()
	metrics.SyncProxyRulesLatency.WithLabelValues(fam).Observe(took)
	if full {
		metrics.SyncFullProxyRulesLatency.WithLabelValues(fam).Observe(took)
	} else {
		metrics.SyncPartialProxyRulesLatency.WithLabelValues(fam).Observe(took)
	}
	metrics.SyncProxyRulesLastTimestamp.WithLabelValues(fam).Set(float64(now.Unix()))
	for _, t := range triggers {
		metrics.NetworkProgrammingLatency.WithLabelValues(fam).Observe(now.Sub(t).Seconds())
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
