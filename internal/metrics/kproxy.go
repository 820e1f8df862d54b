package metrics

import "github.com/prometheus/client_golang/prometheus"

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
}

func newOwn() own {
	return own{
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
