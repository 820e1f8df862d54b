package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	gnft "github.com/google/nftables"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/iptables"
	"github.com/kproxy/kproxy/internal/ipvs"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/nftables"
	"github.com/kproxy/kproxy/internal/proxy"
	"github.com/kproxy/kproxy/internal/sysctl"
)

// ipvsBackends are the IPVS mode's backends (the other modes' rules are gone by
// then: newBackends). They report to m.
func ipvsBackends(cfg *config.Config, fs []model.Family, m *metrics.Metrics) ([]proxy.Backend, error) {
	var out []proxy.Backend
	for _, f := range fs {
		b, err := ipvsBackend(cfg, f, m)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func ipvsBackend(cfg *config.Config, f model.Family, m *metrics.Metrics) (proxy.Backend, error) {
	h, err := ipvs.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("ipvs mode, %s: %w", f, err)
	}
	ipvsCfg := cfg.KubeProxy.IPVS
	c := ipvs.Config{
		Family:        f,
		Scheduler:     ipvsCfg.Scheduler,
		MasqueradeAll: cfg.MasqueradeAll,
		MasqueradeBit: cfg.MasqueradeBit,
		StrictARP:     ipvsCfg.StrictARP,
		TCPTimeout:    ipvsCfg.TCPTimeout.Duration,
		TCPFinTimeout: ipvsCfg.TCPFinTimeout.Duration,
		UDPTimeout:    ipvsCfg.UDPTimeout.Duration,
	}
	for _, s := range ipvsCfg.ExcludeCIDRs {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("ipvs mode: --ipvs-exclude-cidrs entry %q: %w", s, err)
		}
		c.ExcludeCIDRs = append(c.ExcludeCIDRs, p.Masked())
	}
	// Its drain loop (RunBackground) runs with the proxy's loop.
	p := ipvs.NewProxier(c, h, ipvs.NetlinkLinks{}, ipvs.ExecIPSet{}, iptables.NewRunner(f), m, clock.RealClock{})
	if err := p.Setup(sysctl.Dir(cfg.ProcSysDir).Set); err != nil {
		return nil, err
	}
	return p, nil
}

// hasIPTablesModeLeftovers is ipvs.HasIPTablesModeLeftovers without a program run
// where it can: iptables-nft keeps the nat table as the nftables table "nat" of the
// family, whose chains netlink lists. Legacy iptables, or a netlink error, reads
// iptables-save as before.
func hasIPTablesModeLeftovers(f model.Family, runner iptables.Runner) bool {
	if iptables.Detected() == iptables.FlavourNFT {
		if conn, err := gnft.New(); err == nil {
			if chains, err := conn.ListChainsOfTableFamily(nftFamily(f)); err == nil {
				for _, c := range chains {
					if c.Table != nil && c.Table.Name == "nat" && ipvs.IsIPTablesModeChain(c.Name) {
						return true
					}
				}
				return false
			}
		}
	}
	return ipvs.HasIPTablesModeLeftovers(runner)
}

func nftFamily(f model.Family) gnft.TableFamily {
	if f == model.IPv6 {
		return gnft.TableFamilyIPv6
	}
	return gnft.TableFamilyIPv4
}

// hasNFTablesTable reports whether nftables mode's table exists for the family, asked
// over netlink: removing it through the nft binary costs three program runs per
// family even when there is nothing to remove. When netlink cannot answer it says
// true, so the removal is tried as before.
func hasNFTablesTable(f model.Family) bool {
	conn, err := gnft.New()
	if err != nil {
		return true
	}
	tables, err := conn.ListTablesOfFamily(nftFamily(f))
	if err != nil {
		return true
	}
	for _, t := range tables {
		if t.Name == nftables.TableName {
			return true
		}
	}
	return false
}

// cleanupIPVS removes IPVS mode's state: with all (--cleanup) every virtual server,
// otherwise (another mode starting) only those on kube-ipvs0's addresses, and only
// when kube-ipvs0 or one of the mode's ipsets shows IPVS mode ran here.
func cleanupIPVS(all bool) error {
	links, sets := ipvs.NetlinkLinks{}, ipvs.ExecIPSet{}
	if !all && !ipvs.HasLeftovers(links, sets) {
		return nil
	}
	var h ipvs.Handle
	if ipvs.Available() {
		var err error
		if h, err = ipvs.NewHandle(); err != nil {
			klog.V(2).InfoS("IPVS not usable; no virtual servers to remove", "err", err)
			h = nil
		}
	}
	var errs []error
	for _, f := range ip6tablesFamilies() {
		if err := ipvs.Cleanup(f, iptables.NewRunner(f), sets, h, links, ipvs.CleanupOptions{AllServices: all}); err != nil {
			errs = append(errs, fmt.Errorf("ipvs %s: %w", f, err))
		}
	}
	if err := ipvs.DeleteDummy(links); err != nil {
		errs = append(errs, err)
	}
	if !all {
		klog.InfoS("Removed IPVS-mode leftovers")
	}
	return errors.Join(errs...)
}
