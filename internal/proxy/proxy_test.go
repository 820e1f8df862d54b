package proxy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
)

// newMetrics is a set of metrics on a registry of the test's own.
func newMetrics(t *testing.T) (*metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// failingBackend fails every sync while fail is set, and records what the health
// check would see while it runs.
type failingBackend struct {
	fail    bool
	status  func() (time.Time, time.Time)
	duringQ []time.Time
}

func (b *failingBackend) Family() model.Family         { return model.IPv4 }
func (b *failingBackend) Flushed(context.Context) bool { return false }
func (b *failingBackend) Sync(context.Context, *model.Snapshot, bool) error {
	q, _ := b.status()
	b.duringQ = append(b.duringQ, q)
	if b.fail {
		return errors.New("restore refused")
	}
	return nil
}

// A change stays queued for as long as syncs fail, so health checks see it waiting
// the whole time, also while a retry runs; it clears once a sync succeeds.
func TestQueuedChangeSurvivesFailedSyncs(t *testing.T) {
	b := &failingBackend{fail: true}
	m, _ := newMetrics(t)
	p := New("node1", []Backend{b}, m, Options{MinSyncPeriod: time.Millisecond, SyncPeriod: time.Hour})
	b.status = p.Status
	p.Handler().OnSynced()
	p.Handler().OnServiceUpsert(&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"},
		Spec: v1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []v1.ServicePort{{Port: 80}}}})
	queued, _ := p.Status()
	if queued.IsZero() {
		t.Fatal("a change is not reported as queued")
	}
	for i := 0; i < 3; i++ {
		if err := p.sync(t.Context()); err == nil {
			t.Fatal("sync succeeded with a failing backend")
		}
		if q, _ := p.Status(); !q.Equal(queued) {
			t.Fatalf("after failed sync %d the queued time is %v, want %v", i, q, queued)
		}
	}
	for i, q := range b.duringQ {
		if !q.Equal(queued) {
			t.Errorf("while sync %d ran, the queued time was %v, want %v", i, q, queued)
		}
	}
	b.fail = false
	if err := p.sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if q, synced := p.Status(); !q.IsZero() || synced.IsZero() {
		t.Errorf("after a successful sync: queued %v (want zero), synced %v", q, synced)
	}
}

func TestFullSyncInterval(t *testing.T) {
	if got := fullSyncInterval(30*time.Second, 10); got != 30*time.Second {
		t.Errorf("small ruleset: %v, want the sync period", got)
	}
	if got := fullSyncInterval(30*time.Second, 10000); got != time.Hour {
		t.Errorf("large ruleset: %v, want an hour", got)
	}
}
