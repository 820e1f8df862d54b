package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/nfacct"
)

// nfacctCounter is one nfacct-backed metric: the metric's name (under kubeproxy_)
// and the nfacct object it reads.
type nfacctCounter struct {
	name, help string
	object     string
}

// nfacctCounters are the nfacct-backed counters of upstream's iptables mode.
func nfacctCounters() []nfacctCounter {
	return []nfacctCounter{
		{
			name:   "iptables_localhost_nodeports_accepted_packets_total",
			help:   "Number of packets accepted on nodeports of loopback interface",
			object: nfacct.LocalhostNodePortsAccepted,
		},
		{
			name:   "iptables_ct_state_invalid_dropped_packets_total",
			help:   "packets dropped by iptables to work around conntrack problems",
			object: nfacct.CTStateInvalidDropped,
		},
	}
}

// RegisterNFAcct exports upstream's nfacct counters on the registry of m, read from the
// kernel with read (the packet count of an nfacct object) at every scrape, as upstream
// kube-proxy does. A counter that cannot be read is logged to logger.
func (m *Metrics) RegisterNFAcct(read func(object string) (uint64, error), logger klog.Logger) error {
	c := &nfacctCollector{read: read, counters: nfacctCounters(), logger: logger}
	if err := m.reg.Register(c); err != nil {
		return fmt.Errorf("metrics: registering the nfacct counters: %w", err)
	}
	return nil
}

type nfacctCollector struct {
	read     func(string) (uint64, error)
	counters []nfacctCounter
	logger   klog.Logger
}

func (c *nfacctCollector) desc(n nfacctCounter) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", n.name), n.help, nil, nil)
}

func (c *nfacctCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, n := range c.counters {
		ch <- c.desc(n)
	}
}

// Collect reports each counter the kernel answers for; one it cannot read is left out
// of this scrape and logged, rather than reported as zero.
func (c *nfacctCollector) Collect(ch chan<- prometheus.Metric) {
	for _, n := range c.counters {
		v, err := c.read(n.object)
		if err != nil {
			c.logger.Error(err, "Cannot read an nfacct counter", "counter", n.object)
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc(n), prometheus.CounterValue, float64(v))
	}
}
