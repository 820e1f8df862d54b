package proxy

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kproxy/kproxy/internal/model"
)

// recordingBackend records each sync (fake time and fullness), reports a flush while
// flushed is set, and runs background work that lasts until its context ends.
type recordingBackend struct {
	family model.Family
	clock  *testingclock.FakeClock

	mu    sync.Mutex
	syncs []syncRecord
	// flushed is what Flushed answers; a sync clears it (the rules are back).
	flushed bool
	// holdFlushed, if set, keeps Flushed from returning until it is closed.
	holdFlushed chan struct{}
	inFlushed   atomic.Bool

	backgroundDone atomic.Bool
}

type syncRecord struct {
	At   time.Duration // since t0
	Full bool
}

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func (b *recordingBackend) Family() model.Family { return b.family }

func (b *recordingBackend) Sync(_ context.Context, _ *model.Snapshot, full bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.syncs = append(b.syncs, syncRecord{At: b.clock.Now().Sub(t0), Full: full})
	b.flushed = false
	return nil
}

func (b *recordingBackend) Flushed(context.Context) bool {
	if b.holdFlushed != nil {
		b.inFlushed.Store(true)
		<-b.holdFlushed
		defer b.inFlushed.Store(false)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushed
}

func (b *recordingBackend) RunBackground(ctx context.Context) {
	<-ctx.Done()
	b.backgroundDone.Store(true)
}

func (b *recordingBackend) recorded() []syncRecord {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]syncRecord(nil), b.syncs...)
}

func service(name string) *v1.Service {
	return &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: v1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []v1.ServicePort{{Port: 80}}}}
}

// running starts p.Run in the bubble and returns a function that reports whether Run
// has returned.
func running(t *testing.T, p *Proxy) (cancel context.CancelFunc, returned func() bool) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		p.Run(ctx)
		close(done)
	}()
	t.Cleanup(cancel)
	return cancel, func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
}

// A flush noticed by the flush watch, at its tick of the injected clock, makes the
// next sync full; the syncs in between and after are partial.
func TestFlushWatchForcesFullSync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := testingclock.NewFakeClock(t0)
		b := &recordingBackend{family: model.IPv4, clock: clk}
		m, _ := newMetrics(t)
		p := New("node1", []Backend{b}, m, Options{MinSyncPeriod: time.Second, SyncPeriod: time.Hour,
			FlushCheckInterval: time.Second, Clock: clk})
		p.Handler().OnSynced()
		running(t, p)
		synctest.Wait()
		p.Handler().OnServiceUpsert(service("a"))
		clk.Step(time.Second)
		synctest.Wait()

		b.mu.Lock()
		b.flushed = true
		b.mu.Unlock()
		clk.Step(time.Second) // the watch's tick sees the flush; the sync restores at once
		synctest.Wait()
		p.Handler().OnServiceUpsert(service("b"))
		clk.Step(time.Second)
		synctest.Wait()

		want := []syncRecord{{0, true}, {time.Second, false}, {2 * time.Second, true}, {3 * time.Second, false}}
		got := b.recorded()
		if len(got) != len(want) {
			t.Fatalf("syncs %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("syncs %v, want %v", got, want)
			}
		}
	})
}

// Run ends with its context, and only once every goroutine it started has: the flush
// watch (here held inside Flushed) and the backend's background work.
func TestRunReturnsAfterItsGoroutines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := testingclock.NewFakeClock(t0)
		b := &recordingBackend{family: model.IPv4, clock: clk, holdFlushed: make(chan struct{})}
		m, _ := newMetrics(t)
		p := New("node1", []Backend{b}, m, Options{MinSyncPeriod: time.Second, SyncPeriod: time.Hour,
			FlushCheckInterval: time.Second, Clock: clk})
		p.Handler().OnSynced()
		cancel, returned := running(t, p)
		synctest.Wait()
		clk.Step(time.Second)
		synctest.Wait()
		if !b.inFlushed.Load() {
			t.Fatal("the flush watch did not call Flushed at its tick")
		}
		cancel()
		synctest.Wait()
		if returned() {
			t.Fatal("Run returned while the flush watch was still inside Flushed")
		}
		if !b.backgroundDone.Load() {
			t.Error("the backend's background work did not end with the context")
		}
		close(b.holdFlushed)
		synctest.Wait()
		if !returned() {
			t.Fatal("Run did not return after the context ended")
		}
		// synctest.Test itself fails if any goroutine of the bubble is left.
	})
}

// Two proxies in one process, each with metrics on its own registry, count their own
// changes only, and each registry's pending gauges read its own proxy's tracker.
func TestTwoProxiesKeepTheirMetricsApart(t *testing.T) {
	type one struct {
		p   *Proxy
		reg *prometheus.Registry
	}
	var ps [2]one
	for i := range ps {
		m, reg := newMetrics(t)
		b := &recordingBackend{family: model.IPv4, clock: testingclock.NewFakeClock(t0)}
		ps[i] = one{New("node1", []Backend{b}, m, Options{SyncPeriod: time.Hour}), reg}
		ps[i].p.Handler().OnSynced()
	}
	ps[0].p.Handler().OnServiceUpsert(service("a"))
	ps[0].p.Handler().OnServiceUpsert(service("b"))
	ps[1].p.Handler().OnServiceUpsert(service("c"))
	for _, x := range ps {
		if err := x.p.sync(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	ps[1].p.Handler().OnServiceUpsert(service("d")) // pending in the second only

	for i, want := range []struct{ changes, pending float64 }{{2, 0}, {1, 1}} {
		if got := gauge(t, ps[i].reg, "kubeproxy_sync_proxy_rules_service_changes_total"); got != want.changes {
			t.Errorf("proxy %d: service changes %v, want %v", i, got, want.changes)
		}
		if got := gauge(t, ps[i].reg, "kubeproxy_sync_proxy_rules_service_changes_pending"); got != want.pending {
			t.Errorf("proxy %d: pending service changes %v, want %v", i, got, want.pending)
		}
		if n, err := testutil.GatherAndCount(ps[i].reg, "kubeproxy_sync_proxy_rules_duration_seconds"); err != nil || n != 1 {
			t.Errorf("proxy %d: %d sync latency series (%v), want 1 (its own family)", i, n, err)
		}
	}
}

// gauge is the value of an unlabelled counter or gauge as reg serves it.
func gauge(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			m := f.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not served", name)
	return 0
}
