package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/iptables"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/nfacct"
	"github.com/kproxy/kproxy/internal/nftables"
	"github.com/kproxy/kproxy/internal/nodeaddr"
	"github.com/kproxy/kproxy/internal/proxy"
	"github.com/kproxy/kproxy/internal/userspace"
)

// newBackends returns the configured mode's backend for each IP family, after removing
// the rules of the other modes (kproxy's or an upstream kube-proxy's), so that
// switching modes on a node leaves no stale rules behind. The backends report to m.
func newBackends(cfg *config.Config, sel *nodeaddr.Selector, m *metrics.Metrics) ([]proxy.Backend, error) {
	var backends []proxy.Backend
	if cfg.Mode != "ipvs" {
		if err := cleanupIPVS(false); err != nil {
			klog.ErrorS(err, "Removing IPVS-mode leftovers failed")
		}
	}
	countWithNFAcct := cfg.Mode == "iptables" && ensureNFAcct(m)
	for _, f := range families() {
		switch cfg.Mode {
		case "iptables":
			cleanupNFTables(f)
			params := iptablesParams(cfg, f)
			params.NFAcct = countWithNFAcct
			backends = append(backends, iptables.NewProxier(params, iptables.NewRunner(f), nodePortIPs(sel, f), m))
		case "nftables":
			if err := iptables.Cleanup(iptables.NewRunner(f)); err != nil {
				klog.ErrorS(err, "Removing iptables-mode rules failed", "family", f)
			}
			nft, err := nftables.New(f)
			if err != nil {
				return nil, fmt.Errorf("nftables mode, %s: %w", f, err)
			}
			backends = append(backends, nftables.NewProxier(nftablesParams(cfg, f), nft, nodePortIPs(sel, f), clock.RealClock{}))
		case "userspace":
			backends = append(backends, userspaceBackend(cfg, sel, f))
		case "ipvs":
			b, err := ipvsBackend(cfg, sel, f, m)
			if err != nil {
				return nil, err
			}
			backends = append(backends, b)
		default:
			return nil, fmt.Errorf("--proxy-mode %s is not implemented yet (implemented: iptables, nftables)", cfg.Mode)
		}
	}
	return backends, nil
}

// families are the IP families this node can proxy: IPv4, and IPv6 when the kernel has
// it and ip6tables works.
func families() []model.Family {
	fs := []model.Family{model.IPv4}
	if _, err := os.Stat("/proc/net/if_inet6"); err == nil {
		if exec.Command("ip6tables", "-w", "5", "-t", "nat", "-S", "POSTROUTING").Run() == nil {
			fs = append(fs, model.IPv6)
		}
	}
	return fs
}

func iptablesParams(cfg *config.Config, f model.Family) iptables.Params {
	p := iptables.Params{
		Family:             f,
		MasqueradeAll:      cfg.MasqueradeAll,
		MasqueradeBit:      cfg.MasqueradeBit,
		LocalhostNodePorts: cfg.LocalhostNodePorts,
		DropInvalid:        !cfg.Conntrack.TCPBeLiberal && !tcpBeLiberal(),
	}
	switch cfg.DetectLocalMode {
	case "BridgeInterface":
		p.LocalDetector = iptables.DetectByBridge(cfg.BridgeInterface)
	case "InterfaceNamePrefix":
		p.LocalDetector = iptables.DetectByInterfacePrefix(cfg.InterfaceNamePrefix)
	case "NodeCIDR":
		p.DetectLocalByNodeCIDR = true
	default: // ClusterCIDR
		if c, ok := clusterCIDR(cfg, f); ok {
			p.LocalDetector = iptables.DetectByCIDR(c)
		}
	}
	return p
}

func nftablesParams(cfg *config.Config, f model.Family) nftables.Params {
	p := nftables.Params{Family: f, MasqueradeAll: cfg.MasqueradeAll, MasqueradeBit: cfg.MasqueradeBit}
	switch cfg.DetectLocalMode {
	case "BridgeInterface":
		p.LocalDetector = nftables.DetectByBridge(cfg.BridgeInterface)
	case "InterfaceNamePrefix":
		p.LocalDetector = nftables.DetectByInterfacePrefix(cfg.InterfaceNamePrefix)
	case "NodeCIDR":
		p.DetectLocalByNodeCIDR = true
	default: // ClusterCIDR
		if c, ok := clusterCIDR(cfg, f); ok {
			p.LocalDetector = nftables.DetectByCIDR(c)
		}
	}
	// Only the standalone source allocates from --service-cluster-ip-range; on a cluster
	// the API server's ranges may differ, and dropping traffic to "unallocated" addresses
	// of a wrong range would break Services.
	if cfg.Manifests != "" {
		for _, r := range cfg.ServiceClusterIPRanges {
			if model.FamilyOf(r.Addr()) == f {
				p.ServiceCIDRs = append(p.ServiceCIDRs, r)
			}
		}
	}
	return p
}

func clusterCIDR(cfg *config.Config, f model.Family) (netip.Prefix, bool) {
	for _, c := range cfg.ClusterCIDRs {
		if model.FamilyOf(c.Addr()) == f {
			return c, true
		}
	}
	return netip.Prefix{}, false
}

// tcpBeLiberal reads the sysctl that makes upstream omit the INVALID drop rule.
func tcpBeLiberal() bool {
	b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal")
	return err == nil && len(b) > 0 && b[0] != '0'
}

func nodePortIPs(sel *nodeaddr.Selector, f model.Family) func(*model.Node) (bool, []netip.Addr) {
	return func(node *model.Node) (bool, []netip.Addr) {
		if sel.MatchesAll() {
			return true, nil
		}
		local, err := nodeaddr.LocalAddrs()
		if err != nil {
			klog.ErrorS(err, "Cannot list local addresses for NodePorts")
		}
		return false, sel.Resolve(f, node, local)
	}
}

func cleanupNFTables(f model.Family) {
	nft, err := nftables.New(f)
	if err != nil {
		klog.V(2).InfoS("nftables not available; nothing of it to remove", "family", f, "err", err)
		return
	}
	if err := nftables.Cleanup(nft); err != nil {
		klog.ErrorS(err, "Removing nftables-mode rules failed", "family", f)
	}
}

// cleanup removes the rules of every mode and family (kproxy's, or an upstream
// kube-proxy's: the names are the same).
func cleanup() error {
	var errs []error
	// IPVS first: its ipsets can only go once no iptables rule references them.
	if err := cleanupIPVS(true); err != nil {
		errs = append(errs, err)
	}
	for _, f := range families() {
		if err := iptables.Cleanup(iptables.NewRunner(f)); err != nil {
			errs = append(errs, fmt.Errorf("iptables %s: %w", f, err))
		}
		if nft, err := nftables.New(f); err == nil {
			if err := nftables.Cleanup(nft); err != nil {
				errs = append(errs, fmt.Errorf("nftables %s: %w", f, err))
			}
		}
	}
	if err := userspace.Cleanup(""); err != nil {
		errs = append(errs, fmt.Errorf("userspace: %w", err))
	}
	return errors.Join(errs...)
}

// userspaceBackend is the userspace mode's backend for family f. The mode needs no
// netfilter, but rules another mode left behind would capture Service traffic before
// it reached kproxy's sockets, so they are removed when the tools exist. UDP flows idle
// for --conntrack-udp-timeout-stream end (userspace.DefaultUDPIdleTimeout if unset).
func userspaceBackend(cfg *config.Config, sel *nodeaddr.Selector, f model.Family) proxy.Backend {
	if err := iptables.Cleanup(iptables.NewRunner(f)); err != nil {
		klog.V(2).InfoS("No iptables-mode rules removed", "family", f, "err", err)
	}
	cleanupNFTables(f)
	p := userspace.Params{Family: f, NodePortAddrs: nodePortIPs(sel, f), UDPIdleTimeout: cfg.Conntrack.UDPStreamTimeout}
	for _, c := range cfg.ClusterCIDRs {
		if model.FamilyOf(c.Addr()) == f {
			p.ClusterCIDRs = append(p.ClusterCIDRs, c)
		}
	}
	return userspace.NewProxier(p)
}

// ensureNFAcct makes the nfacct objects that iptables mode counts INVALID drops and
// localhost NodePort packets in, and exports them as upstream's metrics. Where the
// kernel has no nfnetlink_acct the rules count nothing, and the metrics are absent,
// as with upstream.
func ensureNFAcct(m *metrics.Metrics) bool {
	for _, name := range []string{nfacct.CTStateInvalidDropped, nfacct.LocalhostNodePortsAccepted} {
		if err := nfacct.Ensure(name); err != nil {
			klog.InfoS("No nfacct counters: the iptables rules will not count packets", "err", err)
			return false
		}
	}
	if err := m.RegisterNFAcct(func(name string) (uint64, error) {
		c, err := nfacct.Get(name)
		return c.Packets, err
	}, klog.Background()); err != nil {
		klog.ErrorS(err, "The nfacct counters are not exported")
	}
	return true
}
