package ipvs

import (
	"errors"

	"github.com/kproxy/kproxy/internal/sysctl"
)

// SysctlWriter sets a sysctl given its path below /proc/sys ("net/ipv4/vs/conntrack").
type SysctlWriter = sysctl.Writer

// setSysctls sets what upstream's IPVS mode sets: conntrack for IPVS connections (so
// masquerading works), expiry of connections to removed real servers and of their
// persistence templates, forwarding, and with strictARP the ARP settings that keep
// the node from answering ARP for the addresses on kube-ipvs0. conn_reuse_mode is
// left alone: upstream only sets it on kernels 4.1 to 5.8.
func setSysctls(w SysctlWriter, strictARP bool) error {
	settings := [][2]string{
		{"net/ipv4/vs/conntrack", "1"},
		{"net/ipv4/vs/expire_nodest_conn", "1"},
		{"net/ipv4/vs/expire_quiescent_template", "1"},
		{"net/ipv4/ip_forward", "1"},
	}
	if strictARP {
		settings = append(settings, [2]string{"net/ipv4/conf/all/arp_ignore", "1"}, [2]string{"net/ipv4/conf/all/arp_announce", "2"})
	}
	var errs []error
	for _, s := range settings {
		if err := w(s[0], s[1]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
