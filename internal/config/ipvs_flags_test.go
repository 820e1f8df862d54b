package config

import (
	"strings"
	"testing"
	"time"
)

// The ipvs flags land in KubeProxy.IPVS, where ipvs mode reads them, and other modes
// say they have no effect there.
func TestIPVSFlags(t *testing.T) {
	args := []string{"--ipvs-scheduler=lc", "--ipvs-exclude-cidrs=10.0.0.0/8,192.168.0.0/16", "--ipvs-strict-arp",
		"--ipvs-tcp-timeout=1m", "--ipvs-tcpfin-timeout=2m", "--ipvs-udp-timeout=3m"}
	c := mustParse(t, append([]string{"--proxy-mode=ipvs"}, args...)...)
	ipvs := c.KubeProxy.IPVS
	if ipvs.Scheduler != "lc" || !ipvs.StrictARP || strings.Join(ipvs.ExcludeCIDRs, ",") != "10.0.0.0/8,192.168.0.0/16" ||
		ipvs.TCPTimeout.Duration != time.Minute || ipvs.TCPFinTimeout.Duration != 2*time.Minute || ipvs.UDPTimeout.Duration != 3*time.Minute {
		t.Errorf("ipvs settings not recorded: %+v", ipvs)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("ipvs mode warned about its own flags: %q", c.Warnings)
	}
	c = mustParse(t, append([]string{"--proxy-mode=iptables"}, args...)...)
	if n := countContaining(c.Warnings, "has no effect in iptables mode: only ipvs mode uses it"); n != len(args) {
		t.Errorf("iptables mode: %d of %d ipvs flags warned: %q", n, len(args), c.Warnings)
	}
}
