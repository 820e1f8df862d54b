// Package metrics defines kproxy's Prometheus metrics with upstream kube-proxy's names,
// labels and buckets (prefix kubeproxy_), so existing dashboards and alerts work.
package metrics

import (
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

// The metrics, under upstream kube-proxy's names.
var (
	SyncProxyRulesLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "sync_proxy_rules_duration_seconds",
		Help: "SyncProxyRules latency in seconds", Buckets: exponential(),
	}, []string{"ip_family"})
	SyncFullProxyRulesLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "sync_full_proxy_rules_duration_seconds",
		Help: "SyncProxyRules latency in seconds for full resyncs", Buckets: exponential(),
	}, []string{"ip_family"})
	SyncPartialProxyRulesLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "sync_partial_proxy_rules_duration_seconds",
		Help: "SyncProxyRules latency in seconds for partial resyncs", Buckets: exponential(),
	}, []string{"ip_family"})
	SyncProxyRulesLastTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "sync_proxy_rules_last_timestamp_seconds",
		Help: "The last time proxy rules were successfully synced",
	}, []string{"ip_family"})
	SyncProxyRulesLastQueuedTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "sync_proxy_rules_last_queued_timestamp_seconds",
		Help: "The last time a sync of proxy rules was queued",
	}, []string{"ip_family"})
	NetworkProgrammingLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "network_programming_duration_seconds",
		Help: "In Cluster Network Programming Latency in seconds", Buckets: networkProgrammingBuckets(),
	}, []string{"ip_family"})
	EndpointChangesTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "sync_proxy_rules_endpoint_changes_total",
		Help: "Cumulative proxy rules Endpoint changes",
	})
	ServiceChangesTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "sync_proxy_rules_service_changes_total",
		Help: "Cumulative proxy rules Service changes",
	})
	NoLocalEndpointsTotal = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "sync_proxy_rules_no_local_endpoints_total",
		Help: "Number of services with a Local traffic policy and no endpoints",
	}, []string{"traffic_policy", "ip_family"})
	IPTablesRulesTotal = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "sync_proxy_rules_iptables_total",
		Help: "Total number of iptables rules owned by kube-proxy",
	}, []string{"table", "ip_family"})
	IPTablesRulesLastSync = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "sync_proxy_rules_iptables_last",
		Help: "Number of iptables rules written by kube-proxy in last sync",
	}, []string{"table", "ip_family"})
	IPTablesRestoreFailuresTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "sync_proxy_rules_iptables_restore_failures_total",
		Help: "Cumulative proxy iptables restore failures",
	}, []string{"ip_family"})
	IPTablesPartialRestoreFailuresTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "sync_proxy_rules_iptables_partial_restore_failures_total",
		Help: "Cumulative proxy iptables partial restore failures",
	}, []string{"ip_family"})
	NFTablesSyncFailuresTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "sync_proxy_rules_nftables_sync_failures_total",
		Help: "Cumulative proxy nftables sync failures",
	}, []string{"ip_family"})
	// NFTablesCleanupFailuresTotal counts failed transactions that delete stale
	// objects. Upstream runs them apart from the sync; kproxy deletes stale chains in
	// the sync's own transaction, so this stays 0 unless that changes.
	NFTablesCleanupFailuresTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "sync_proxy_rules_nftables_cleanup_failures_total",
		Help: "Cumulative proxy nftables cleanup failures",
	}, []string{"ip_family"})
	ProxyHealthzTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "proxy_healthz_total",
		Help: "Cumulative proxy healthz HTTP status",
	}, []string{"code"})
	ProxyLivezTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "proxy_livez_total",
		Help: "Cumulative proxy livez HTTP status",
	}, []string{"code"})
	ConntrackReconcilerSyncDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "conntrack_reconciler_sync_duration_seconds",
		Help: "ReconcileConntrackFlowsLatency latency in seconds", Buckets: exponential(),
	}, []string{"ip_family"})
	ConntrackReconcilerDeletedEntriesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "conntrack_reconciler_deleted_entries_total",
		Help: "Cumulative conntrack flows deleted by conntrack reconciler",
	}, []string{"ip_family"})
)

// Registry holds every kproxy metric plus the Go and process collectors.
var Registry = prometheus.NewRegistry()

func init() {
	Registry.MustRegister(
		SyncProxyRulesLatency, SyncFullProxyRulesLatency, SyncPartialProxyRulesLatency,
		SyncProxyRulesLastTimestamp, SyncProxyRulesLastQueuedTimestamp, NetworkProgrammingLatency,
		EndpointChangesTotal, ServiceChangesTotal, NoLocalEndpointsTotal,
		IPTablesRulesTotal, IPTablesRulesLastSync, IPTablesRestoreFailuresTotal, IPTablesPartialRestoreFailuresTotal,
		NFTablesSyncFailuresTotal, NFTablesCleanupFailuresTotal,
		ProxyHealthzTotal, ProxyLivezTotal,
		NodePortReservationFailuresTotal, NodePortsReserved,
		ConntrackReconcilerSyncDuration, ConntrackReconcilerDeletedEntriesTotal,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
}

// RegisterPending adds the *_changes_pending gauges, read from the tracker when scraped.
func RegisterPending(services, endpoints func() float64) {
	Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "sync_proxy_rules_service_changes_pending",
			Help: "Pending proxy rules Service changes"}, services),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "sync_proxy_rules_endpoint_changes_pending",
			Help: "Pending proxy rules Endpoint changes"}, endpoints),
	)
}
