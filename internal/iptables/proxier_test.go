package iptables

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
)

// restoreRunner is the iptables fake whose restores fail while fail is set.
type restoreRunner struct {
	*Fake
	fail bool
}

func (r *restoreRunner) Restore(data []byte) error {
	if r.fail {
		return errors.New("iptables-restore: line 3 failed")
	}
	return r.Fake.Restore(data)
}

// The proxier reports to the metrics it was given: rule counts after a sync, and full
// and partial restore failures apart; another proxier's metrics stay untouched.
func TestProxierReportsToItsMetrics(t *testing.T) {
	m, other := newMetrics(t), newMetrics(t)
	params := referenceParams()
	params.LocalhostNodePorts = false // no route_localnet write
	r := &restoreRunner{Fake: NewFake(model.IPv4)}
	p := NewProxier(params, r, noSysctl, m)
	NewProxier(params, &restoreRunner{Fake: NewFake(model.IPv4)}, noSysctl, other)
	sp := clusterIPPort("web", "172.30.0.41")
	snap := snapshotOf(map[*model.ServicePort][]*model.Endpoint{sp: {ep("10.180.0.1", 80, "node2")}})

	if err := p.Sync(t.Context(), snap, true); err != nil {
		t.Fatal(err)
	}
	nat := testutil.ToFloat64(m.IPTablesRulesLastSync.WithLabelValues("nat", "IPv4"))
	if nat == 0 || testutil.ToFloat64(m.IPTablesRulesTotal.WithLabelValues("nat", "IPv4")) != nat {
		t.Errorf("after a full sync: nat rules last sync %v, total %v; want equal and > 0",
			nat, testutil.ToFloat64(m.IPTablesRulesTotal.WithLabelValues("nat", "IPv4")))
	}

	r.fail = true
	moved := snapshotOf(map[*model.ServicePort][]*model.Endpoint{sp: {ep("10.180.0.2", 80, "node2")}})
	if err := p.Sync(t.Context(), moved, false); err == nil {
		t.Fatal("partial sync succeeded with a failing restore")
	}
	if err := p.Sync(t.Context(), snap, true); err == nil {
		t.Fatal("full sync succeeded with a failing restore")
	}
	if got := testutil.ToFloat64(m.IPTablesPartialRestoreFailuresTotal.WithLabelValues("IPv4")); got != 1 {
		t.Errorf("partial restore failures %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.IPTablesRestoreFailuresTotal.WithLabelValues("IPv4")); got != 1 {
		t.Errorf("full restore failures %v, want 1", got)
	}
	if got := testutil.ToFloat64(other.IPTablesRestoreFailuresTotal.WithLabelValues("IPv4")) +
		testutil.ToFloat64(other.IPTablesRulesLastSync.WithLabelValues("nat", "IPv4")); got != 0 {
		t.Errorf("the other proxier's metrics moved: %v", got)
	}
}

// newMetrics is a metric set on a registry of its own.
func newMetrics(t *testing.T) *metrics.Metrics {
	t.Helper()
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// noSysctl is a sysctl writer for proxiers whose params need none.
func noSysctl(_, _ string) error { return nil }
