package metrics

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/nfacct"
)

func mustNew(t *testing.T, reg prometheus.Registerer) *Metrics {
	t.Helper()
	m, err := New(reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

// gathered is the value of one unlabelled metric as reg would serve it.
func gathered(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		m := f.GetMetric()[0]
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not served", name)
	return 0
}

// Two sets on two registries are independent: each registry serves only its own
// counts, so two proxies in one process do not add into each other's metrics.
func TestTwoSetsCountIndependently(t *testing.T) {
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	a, b := mustNew(t, regA), mustNew(t, regB)
	a.ServiceChangesTotal.Add(3)
	b.ServiceChangesTotal.Add(5)
	a.NFTablesSyncFailuresTotal.WithLabelValues("IPv4").Inc()
	a.SetPendingSource(func() (int, int) { return 7, 1 })
	b.SetPendingSource(func() (int, int) { return 0, 9 })

	for _, c := range []struct {
		reg  prometheus.Gatherer
		name string
		want float64
	}{
		{regA, "kubeproxy_sync_proxy_rules_service_changes_total", 3},
		{regB, "kubeproxy_sync_proxy_rules_service_changes_total", 5},
		{regA, "kubeproxy_sync_proxy_rules_service_changes_pending", 7},
		{regA, "kubeproxy_sync_proxy_rules_endpoint_changes_pending", 1},
		{regB, "kubeproxy_sync_proxy_rules_service_changes_pending", 0},
		{regB, "kubeproxy_sync_proxy_rules_endpoint_changes_pending", 9},
	} {
		if got := gathered(t, c.reg, c.name); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
	if got := testutil.ToFloat64(b.NFTablesSyncFailuresTotal.WithLabelValues("IPv4")); got != 0 {
		t.Errorf("b's nftables sync failures = %v after a's was counted, want 0", got)
	}
}

// A second set on the same registry is refused with the metric's name, rather than
// two proxies silently sharing (or panicking on) one name.
func TestSecondSetOnOneRegistryFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	mustNew(t, reg)
	_, err := New(reg)
	var dup prometheus.AlreadyRegisteredError
	if !errors.As(err, &dup) || !strings.Contains(err.Error(), "kubeproxy_sync_proxy_rules_duration_seconds") {
		t.Fatalf("second New on one registry: %v, want AlreadyRegisteredError naming the first metric", err)
	}
}

// The names, types and help texts are upstream kube-proxy's: dashboards and alerts
// written for it must find them. Spot-checked against kube-proxy's metrics.go.
func TestUpstreamNamesAndHelp(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := mustNew(t, reg)
	m.SyncProxyRulesLatency.WithLabelValues("IPv4").Observe(0.01)
	m.NoLocalEndpointsTotal.WithLabelValues("internal", "IPv4").Set(1)
	m.IPTablesRulesTotal.WithLabelValues("nat", "IPv4").Set(1)
	m.ProxyHealthzTotal.WithLabelValues("200").Inc()
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP kubeproxy_sync_proxy_rules_no_local_endpoints_total Number of services with a Local traffic policy and no endpoints
# TYPE kubeproxy_sync_proxy_rules_no_local_endpoints_total gauge
kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="internal"} 1
# HELP kubeproxy_sync_proxy_rules_iptables_total Total number of iptables rules owned by kube-proxy
# TYPE kubeproxy_sync_proxy_rules_iptables_total gauge
kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv4",table="nat"} 1
# HELP kubeproxy_proxy_healthz_total Cumulative proxy healthz HTTP status
# TYPE kubeproxy_proxy_healthz_total counter
kubeproxy_proxy_healthz_total{code="200"} 1
`), "kubeproxy_sync_proxy_rules_no_local_endpoints_total", "kubeproxy_sync_proxy_rules_iptables_total", "kubeproxy_proxy_healthz_total")
	if err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "kubeproxy_sync_proxy_rules_duration_seconds"); err != nil || n != 1 {
		t.Errorf("kubeproxy_sync_proxy_rules_duration_seconds: %d series, %v", n, err)
	}
}

// The nfacct counters are read from the kernel at each scrape; one the kernel does not
// answer for is left out, not reported as 0.
func TestNFAcctCountersReadAtScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := mustNew(t, reg)
	packets := uint64(4)
	read := func(object string) (uint64, error) {
		if object == nfacct.CTStateInvalidDropped {
			return 0, errors.New("no such object")
		}
		return packets, nil
	}
	if err := m.RegisterNFAcct(read, klog.Background()); err != nil {
		t.Fatal(err)
	}
	packets = 6
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP kubeproxy_iptables_localhost_nodeports_accepted_packets_total Number of packets accepted on nodeports of loopback interface
# TYPE kubeproxy_iptables_localhost_nodeports_accepted_packets_total counter
kubeproxy_iptables_localhost_nodeports_accepted_packets_total 6
`), "kubeproxy_iptables_localhost_nodeports_accepted_packets_total", "kubeproxy_iptables_ct_state_invalid_dropped_packets_total")
	if err != nil {
		t.Error(err)
	}
}

// The conntrack gauges are absent until a source is set, read it at each scrape, and
// are left out of a scrape where it fails.
func TestConntrackFillReadAtScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := mustNew(t, reg)
	names := []string{"kproxy_conntrack_entries", "kproxy_conntrack_max"}
	if n, err := testutil.GatherAndCount(reg, names...); err != nil || n != 0 {
		t.Errorf("before a source: %d samples, %v; want none", n, err)
	}
	entries, limit := 10, 100
	var readErr error
	m.SetConntrackFillSource(func() (int, int, error) { return entries, limit, readErr })
	entries = 99
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP kproxy_conntrack_entries Entries in the conntrack table of kproxy's network namespace (nf_conntrack_count)
# TYPE kproxy_conntrack_entries gauge
kproxy_conntrack_entries 99
# HELP kproxy_conntrack_max The conntrack table's limit (nf_conntrack_max); new connections are dropped once kproxy_conntrack_entries reaches it
# TYPE kproxy_conntrack_max gauge
kproxy_conntrack_max 100
`), names...)
	if err != nil {
		t.Error(err)
	}
	readErr = errors.New("no conntrack module")
	if n, err := testutil.GatherAndCount(reg, names...); err != nil || n != 0 {
		t.Errorf("failing source: %d samples, %v; want none", n, err)
	}
}
