package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// kproxy's own metrics, for things upstream kube-proxy does not do; they carry the
// prefix kproxy_ so that nobody mistakes them for upstream's.
const ownNamespace = "kproxy"

// own are kproxy's own metrics, part of Metrics.
type own struct {
	// NodePortReservationFailuresTotal counts failed attempts to hold a NodePort's
	// socket (another process has it); each retry that fails counts again.
	NodePortReservationFailuresTotal *prometheus.CounterVec
	// NodePortsReserved is the number of NodePort sockets kproxy holds.
	NodePortsReserved *prometheus.GaugeVec

	// conntrackFill reads the conntrack table's entries and limit for the
	// kproxy_conntrack_* gauges at each scrape; nil until SetConntrackFillSource
	// (the gauges are absent until then rather than a misleading 0).
	conntrackFill atomic.Pointer[func() (entries, limit int, err error)]
}

func newOwn() *own {
	return &own{
		NodePortReservationFailuresTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ownNamespace, Name: "nodeport_reservation_failures_total",
			Help: "Cumulative failed attempts to reserve a NodePort's socket because the port was in use",
		}, []string{"protocol"}),
		NodePortsReserved: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ownNamespace, Name: "nodeports_reserved",
			Help: "Number of NodePorts whose socket kproxy holds",
		}, []string{"protocol"}),
	}
}

// ownFuncs are the gauges of own read at scrape time.
func (o *own) ownFuncs() []prometheus.Collector {
	fill := func(pick func(entries, limit int) int) func(chan<- prometheus.Metric, *prometheus.Desc) {
		return func(ch chan<- prometheus.Metric, d *prometheus.Desc) {
			f := o.conntrackFill.Load()
			if f == nil {
				return
			}
			entries, limit, err := (*f)()
			if err != nil {
				return
			}
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(pick(entries, limit)))
		}
	}
	return []prometheus.Collector{
		funcCollector{prometheus.NewDesc(ownNamespace+"_conntrack_entries",
			"Entries in the conntrack table of kproxy's network namespace (nf_conntrack_count)", nil, nil),
			fill(func(e, _ int) int { return e })},
		funcCollector{prometheus.NewDesc(ownNamespace+"_conntrack_max",
			"The conntrack table's limit (nf_conntrack_max); new connections are dropped once kproxy_conntrack_entries reaches it", nil, nil),
			fill(func(_, l int) int { return l })},
	}
}

// SetConntrackFillSource makes the kproxy_conntrack_entries and kproxy_conntrack_max
// gauges read f at each scrape; a scrape where f fails omits them.
func (o *own) SetConntrackFillSource(f func() (entries, limit int, err error)) {
	o.conntrackFill.Store(&f)
}

// funcCollector is one gauge whose sample, if any, collect computes at scrape time.
type funcCollector struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric, *prometheus.Desc)
}

func (c funcCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c funcCollector) Collect(ch chan<- prometheus.Metric) { c.collect(ch, c.desc) }
