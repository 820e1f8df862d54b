// Package metrics defines kproxy's Prometheus metrics with upstream kube-proxy's names,
// labels and buckets (prefix kubeproxy_), so existing dashboards and alerts work.
//
// There is no package-level state: New makes one set of metrics on the registry it is
// given, and every part of a proxy receives that set. Two proxies in one process (tests,
// benchmarks) thus neither collide on registration nor mix their counts.
package metrics

import (
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const namespace = "kubeproxy"

func exponential() []float64 { return prometheus.ExponentialBuckets(0.001, 2, 15) }

// networkProgrammingBuckets are upstream's: 0.25s, 0.5s, 1..59s, 60..115s by 5, 120..300s by 30.
func networkProgrammingBuckets() []float64 {
	b := []float64{0.25, 0.5}
	for i := 1; i < 60; i++ {
		b = append(b, float64(i))
	}
	for i := 60; i < 120; i += 5 {
		b = append(b, float64(i))
	}
	for i := 120; i <= 300; i += 30 {
		b = append(b, float64(i))
	}
	return b
}

// Metrics is one proxy's set of metrics. The upstream ones are here; kproxy's own
// (prefix kproxy_) are declared in kproxy.go.
type Metrics struct {
	SyncProxyRulesLatency               *prometheus.HistogramVec
	SyncFullProxyRulesLatency           *prometheus.HistogramVec
	SyncPartialProxyRulesLatency        *prometheus.HistogramVec
	SyncProxyRulesLastTimestamp         *prometheus.GaugeVec
	SyncProxyRulesLastQueuedTimestamp   *prometheus.GaugeVec
	NetworkProgrammingLatency           *prometheus.HistogramVec
	EndpointChangesTotal                prometheus.Counter
	ServiceChangesTotal                 prometheus.Counter
	NoLocalEndpointsTotal               *prometheus.GaugeVec
	IPTablesRulesTotal                  *prometheus.GaugeVec
	IPTablesRulesLastSync               *prometheus.GaugeVec
	IPTablesRestoreFailuresTotal        *prometheus.CounterVec
	IPTablesPartialRestoreFailuresTotal *prometheus.CounterVec
	NFTablesSyncFailuresTotal           *prometheus.CounterVec
	// NFTablesCleanupFailuresTotal counts failed transactions that delete stale
	// objects. Upstream runs them apart from the sync; kproxy deletes stale chains in
	// the sync's own transaction, so this stays 0 unless that changes.
	NFTablesCleanupFailuresTotal           *prometheus.CounterVec
	ProxyHealthzTotal                      *prometheus.CounterVec
	ProxyLivezTotal                        *prometheus.CounterVec
	ConntrackReconcilerSyncDuration        *prometheus.HistogramVec
	ConntrackReconcilerDeletedEntriesTotal *prometheus.CounterVec

	*own

	// reg is where RegisterNFAcct adds the nfacct collector.
	reg prometheus.Registerer
	// pending reads the tracker's pending changes for the *_changes_pending gauges;
	// nil until SetPendingSource (the gauges read 0 until then).
	pending atomic.Pointer[func() (services, endpoints int)]
}

// New makes the metrics and registers them on reg. It fails, naming the metric, when
// reg already holds a metric of the same name (a second set on one registry).
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		SyncProxyRulesLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "sync_proxy_rules_duration_seconds",
			Help: "SyncProxyRules latency in seconds", Buckets: exponential(),
		}, []string{"ip_family"}),
		SyncFullProxyRulesLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "sync_full_proxy_rules_duration_seconds",
			Help: "SyncProxyRules latency in seconds for full resyncs", Buckets: exponential(),
		}, []string{"ip_family"}),
		SyncPartialProxyRulesLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "sync_partial_proxy_rules_duration_seconds",
			Help: "SyncProxyRules latency in seconds for partial resyncs", Buckets: exponential(),
		}, []string{"ip_family"}),
		SyncProxyRulesLastTimestamp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sync_proxy_rules_last_timestamp_seconds",
			Help: "The last time proxy rules were successfully synced",
		}, []string{"ip_family"}),
		SyncProxyRulesLastQueuedTimestamp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sync_proxy_rules_last_queued_timestamp_seconds",
			Help: "The last time a sync of proxy rules was queued",
		}, []string{"ip_family"}),
		NetworkProgrammingLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "network_programming_duration_seconds",
			Help: "In Cluster Network Programming Latency in seconds", Buckets: networkProgrammingBuckets(),
		}, []string{"ip_family"}),
		EndpointChangesTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "sync_proxy_rules_endpoint_changes_total",
			Help: "Cumulative proxy rules Endpoint changes",
		}),
		ServiceChangesTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "sync_proxy_rules_service_changes_total",
			Help: "Cumulative proxy rules Service changes",
		}),
		NoLocalEndpointsTotal: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sync_proxy_rules_no_local_endpoints_total",
			Help: "Number of services with a Local traffic policy and no endpoints",
		}, []string{"traffic_policy", "ip_family"}),
		IPTablesRulesTotal: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sync_proxy_rules_iptables_total",
			Help: "Total number of iptables rules owned by kube-proxy",
		}, []string{"table", "ip_family"}),
		IPTablesRulesLastSync: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sync_proxy_rules_iptables_last",
			Help: "Number of iptables rules written by kube-proxy in last sync",
		}, []string{"table", "ip_family"}),
		IPTablesRestoreFailuresTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sync_proxy_rules_iptables_restore_failures_total",
			Help: "Cumulative proxy iptables restore failures",
		}, []string{"ip_family"}),
		IPTablesPartialRestoreFailuresTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sync_proxy_rules_iptables_partial_restore_failures_total",
			Help: "Cumulative proxy iptables partial restore failures",
		}, []string{"ip_family"}),
		NFTablesSyncFailuresTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sync_proxy_rules_nftables_sync_failures_total",
			Help: "Cumulative proxy nftables sync failures",
		}, []string{"ip_family"}),
		NFTablesCleanupFailuresTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sync_proxy_rules_nftables_cleanup_failures_total",
			Help: "Cumulative proxy nftables cleanup failures",
		}, []string{"ip_family"}),
		ProxyHealthzTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "proxy_healthz_total",
			Help: "Cumulative proxy healthz HTTP status",
		}, []string{"code"}),
		ProxyLivezTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "proxy_livez_total",
			Help: "Cumulative proxy livez HTTP status",
		}, []string{"code"}),
		ConntrackReconcilerSyncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "conntrack_reconciler_sync_duration_seconds",
			Help: "ReconcileConntrackFlowsLatency latency in seconds", Buckets: exponential(),
		}, []string{"ip_family"}),
		ConntrackReconcilerDeletedEntriesTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "conntrack_reconciler_deleted_entries_total",
			Help: "Cumulative conntrack flows deleted by conntrack reconciler",
		}, []string{"ip_family"}),
		own: newOwn(),
		reg: reg,
	}
	pending := func(pick func(services, endpoints int) int) func() float64 {
		return func() float64 {
			f := m.pending.Load()
			if f == nil {
				return 0
			}
			return float64(pick((*f)()))
		}
	}
	all := []prometheus.Collector{
		m.SyncProxyRulesLatency, m.SyncFullProxyRulesLatency, m.SyncPartialProxyRulesLatency,
		m.SyncProxyRulesLastTimestamp, m.SyncProxyRulesLastQueuedTimestamp, m.NetworkProgrammingLatency,
		m.EndpointChangesTotal, m.ServiceChangesTotal, m.NoLocalEndpointsTotal,
		m.IPTablesRulesTotal, m.IPTablesRulesLastSync, m.IPTablesRestoreFailuresTotal, m.IPTablesPartialRestoreFailuresTotal,
		m.NFTablesSyncFailuresTotal, m.NFTablesCleanupFailuresTotal,
		m.ProxyHealthzTotal, m.ProxyLivezTotal,
		m.NodePortReservationFailuresTotal, m.NodePortsReserved,
		m.ConntrackReconcilerSyncDuration, m.ConntrackReconcilerDeletedEntriesTotal,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "sync_proxy_rules_service_changes_pending",
			Help: "Pending proxy rules Service changes"}, pending(func(s, _ int) int { return s })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "sync_proxy_rules_endpoint_changes_pending",
			Help: "Pending proxy rules Endpoint changes"}, pending(func(_, e int) int { return e })),
	}
	all = append(all, m.ownFuncs()...)
	for _, c := range all {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: registering %s: %w", collectorName(c), err)
		}
	}
	return m, nil
}

// collectorName is the fully qualified name of a collector's metric, for errors. Each
// collector of New describes one metric, so Describe cannot block on the buffer.
func collectorName(c prometheus.Collector) string {
	ch := make(chan *prometheus.Desc, 1)
	c.Describe(ch)
	return (<-ch).String()
}

// SetPendingSource makes the *_changes_pending gauges read f (the tracker's pending
// Service and EndpointSlice changes) at each scrape.
func (m *Metrics) SetPendingSource(f func() (services, endpoints int)) { m.pending.Store(&f) }

// NewRegistry returns the registry kproxy serves: empty but for the Go runtime and
// process collectors, which upstream's registry also carries. New adds the rest.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
