package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/nfacct"
)

// NFAcctCounter is one nfacct-backed metric: the metric's name (under kubeproxy_)
// and the nfacct object it reads.
type NFAcctCounter struct {
	Name, Help string
	Object     string
}

// The nfacct-backed counters of upstream's iptables mode.
var (
	LocalhostNodePortsAcceptedPackets = NFAcctCounter{
		Name:   "iptables_localhost_nodeports_accepted_packets_total",
		Help:   "Number of packets accepted on nodeports of loopback interface",
		Object: nfacct.LocalhostNodePortsAccepted,
	}
	CTStateInvalidDroppedPackets = NFAcctCounter{
		Name:   "iptables_ct_state_invalid_dropped_packets_total",
		Help:   "packets dropped by iptables to work around conntrack problems",
		Object: nfacct.CTStateInvalidDropped,
	}
)

// RegisterNFAcct exports the counters, read from the kernel with read (the packet
// count of an nfacct object) at every scrape, as upstream kube-proxy does.
func RegisterNFAcct(read func(object string) (uint64, error), counters ...NFAcctCounter) {
	Registry.MustRegister(&nfacctCollector{read: read, counters: counters})
}

type nfacctCollector struct {
	read     func(string) (uint64, error)
	counters []NFAcctCounter
}

func (c *nfacctCollector) desc(n NFAcctCounter) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", n.Name), n.Help, nil, nil)
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
		v, err := c.read(n.Object)
		if err != nil {
			klog.ErrorS(err, "Cannot read an nfacct counter", "counter", n.Object)
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc(n), prometheus.CounterValue, float64(v))
	}
}
