package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/iptables"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/nfacct"
	"github.com/kproxy/kproxy/internal/nftables"
	"github.com/kproxy/kproxy/internal/proxy"
	"github.com/kproxy/kproxy/internal/sysctl"
	"github.com/kproxy/kproxy/internal/userspace"
)

// mode is one proxy mode as the command wires it. The node's own parameters (NodePort
// addresses, the local-traffic detector) are no business of a mode's: the sync loop
// resolves them for every backend (nodeaddr.Resolver).
type mode struct {
	name string
	// families are the IP families the mode can program on this node.
	families func() []model.Family
	// build makes the mode's backend of each family, reporting to m.
	build func(cfg *config.Config, fs []model.Family, m *metrics.Metrics) ([]proxy.Backend, error)
	// removeLeftovers removes what the mode left on the node before mode next starts,
	// logging what fails: rules of another mode would capture Service traffic first.
	removeLeftovers func(next string)
	// cleanup removes everything of the mode (--cleanup).
	cleanup func() error
	// primaryNodePorts: NodePorts answer on the node's primary address by default
	// (nodePortAddresses unset), as upstream's nftables mode does; otherwise on all.
	primaryNodePorts bool
	// ownsNodePorts: the mode's own sockets hold the NodePorts (userspace), so no
	// reservation socket may, or it would answer for Services without endpoints.
	ownsNodePorts bool
	// countsSyncFailures: failed syncs count in kubeproxy_sync_proxy_rules_nftables_sync_failures_total.
	countsSyncFailures bool
}

// modes lists every mode, in the order --cleanup removes them: IPVS first, because its
// ipsets can only go once no iptables rule references them.
func modes() []mode {
	return []mode{
		{name: "ipvs", families: ip6tablesFamilies, build: ipvsBackends,
			removeLeftovers: func(string) { logErr(cleanupIPVS(false), "Removing IPVS-mode leftovers failed") },
			cleanup:         func() error { return cleanupIPVS(true) }},
		{name: "iptables", families: ip6tablesFamilies, build: iptablesBackends,
			removeLeftovers: removeIPTablesLeftovers, cleanup: cleanupIPTables},
		{name: "nftables", families: nftablesFamilies, build: nftablesBackends,
			removeLeftovers: func(string) { removeNFTablesLeftovers() }, cleanup: cleanupNFTables,
			primaryNodePorts: true, countsSyncFailures: true},
		{name: "userspace", families: kernelFamilies, build: userspaceBackends,
			removeLeftovers: func(string) { logErr(userspace.Cleanup(""), "Removing userspace-mode leftovers failed") },
			cleanup:         func() error { return userspace.Cleanup("") },
			ownsNodePorts:   true},
	}
}

// modeNamed returns the mode called name.
func modeNamed(name string) (mode, error) {
	var names []string
	for _, m := range modes() {
		if m.name == name {
			return m, nil
		}
		names = append(names, m.name)
	}
	return mode{}, fmt.Errorf("--proxy-mode %q is not a mode (modes: %s)", name, strings.Join(names, ", "))
}

// newBackends returns the mode's backend for each IP family it can program, after
// removing the rules of the other modes (kproxy's or an upstream kube-proxy's), so
// that switching modes on a node leaves no stale rules behind. The backends report
// to ms.
func newBackends(cfg *config.Config, m mode, ms *metrics.Metrics) ([]proxy.Backend, error) {
	for _, other := range modes() {
		if other.name != m.name {
			other.removeLeftovers(m.name)
		}
	}
	return m.build(cfg, m.families(), ms)
}

// cleanup removes the rules of every mode and family (kproxy's, or an upstream
// kube-proxy's: the names are the same).
func cleanup() error {
	var errs []error
	for _, m := range modes() {
		if err := m.cleanup(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.name, err))
		}
	}
	return errors.Join(errs...)
}

func logErr(err error, msg string) {
	if err != nil {
		klog.ErrorS(err, msg)
	}
}

// kernelFamilies are IPv4, and IPv6 when the kernel has it.
func kernelFamilies() []model.Family {
	fs := []model.Family{model.IPv4}
	if _, err := os.Stat("/proc/net/if_inet6"); err == nil {
		fs = append(fs, model.IPv6)
	}
	return fs
}

// ip6tablesFamilies are the families of the modes that program iptables: IPv6 needs
// the kernel's IPv6 and a working ip6tables.
func ip6tablesFamilies() []model.Family {
	fs := kernelFamilies()
	if len(fs) > 1 && exec.Command("ip6tables", "-w", "5", "-t", "nat", "-S", "POSTROUTING").Run() != nil {
		fs = fs[:1]
	}
	return fs
}

// nftablesFamilies are the families nftables mode programs: IPv6 needs the kernel's
// IPv6 and nft's ip6 family, not ip6tables.
func nftablesFamilies() []model.Family {
	fs := kernelFamilies()
	if len(fs) > 1 {
		if _, err := nftables.New(model.IPv6); err != nil {
			klog.InfoS("No IPv6 in nftables mode", "err", err)
			fs = fs[:1]
		}
	}
	return fs
}

func iptablesBackends(cfg *config.Config, fs []model.Family, m *metrics.Metrics) ([]proxy.Backend, error) {
	countWithNFAcct := ensureNFAcct(m)
	var out []proxy.Backend
	for _, f := range fs {
		p := iptables.Params{
			Family:             f,
			MasqueradeAll:      cfg.MasqueradeAll,
			MasqueradeBit:      cfg.MasqueradeBit,
			LocalhostNodePorts: cfg.LocalhostNodePorts,
			DropInvalid:        !cfg.Conntrack.TCPBeLiberal && !tcpBeLiberal(sysctl.Dir(cfg.ProcSysDir)),
			NFAcct:             countWithNFAcct,
		}
		out = append(out, iptables.NewProxier(p, iptables.NewRunner(f), sysctl.Dir(cfg.ProcSysDir).Set, m))
	}
	return out, nil
}

func nftablesBackends(cfg *config.Config, fs []model.Family, m *metrics.Metrics) ([]proxy.Backend, error) {
	var out []proxy.Backend
	for _, f := range fs {
		nft, err := nftables.New(f)
		if err != nil {
			return nil, fmt.Errorf("nftables mode, %s: %w", f, err)
		}
		p := nftables.Params{Family: f, MasqueradeAll: cfg.MasqueradeAll, MasqueradeBit: cfg.MasqueradeBit}
		// Only the standalone source allocates from --service-cluster-ip-range; on a
		// cluster the API server's ranges may differ, and dropping traffic to
		// "unallocated" addresses of a wrong range would break Services.
		if cfg.Manifests != "" {
			p.ServiceCIDRs = model.PrefixesOf(cfg.ServiceClusterIPRanges, f)
		}
		out = append(out, nftables.NewProxier(p, nft, clock.RealClock{}, m))
	}
	return out, nil
}

// userspaceBackends are the userspace mode's backends. UDP flows idle for
// --conntrack-udp-timeout-stream end (userspace.DefaultUDPIdleTimeout if unset).
func userspaceBackends(cfg *config.Config, fs []model.Family, _ *metrics.Metrics) ([]proxy.Backend, error) {
	var out []proxy.Backend
	for _, f := range fs {
		p := userspace.Params{Family: f, UDPIdleTimeout: cfg.Conntrack.UDPStreamTimeout,
			ClusterCIDRs: model.PrefixesOf(cfg.ClusterCIDRs, f)}
		out = append(out, userspace.NewProxier(p))
	}
	return out, nil
}

// tcpBeLiberal reads the sysctl that makes upstream omit the INVALID drop rule.
func tcpBeLiberal(d sysctl.Dir) bool {
	v, err := d.Read("net/netfilter/nf_conntrack_tcp_be_liberal")
	return err == nil && v != "" && v != "0"
}

// removeIPTablesLeftovers removes iptables mode's rules before mode next starts.
// IPVS mode uses the same base chains (KUBE-SERVICES, KUBE-POSTROUTING, ...) and
// rewrites them itself, so before it only per-Service chains count as leftovers.
func removeIPTablesLeftovers(next string) {
	for _, f := range ip6tablesFamilies() {
		runner := iptables.NewRunner(f)
		if next == "ipvs" && !hasIPTablesModeLeftovers(f, runner) {
			continue
		}
		if err := iptables.Cleanup(runner); err != nil {
			// Without iptables (a userspace-only node) there is nothing to remove.
			klog.V(2).InfoS("No iptables-mode rules removed", "family", f, "err", err)
		}
	}
}

func cleanupIPTables() error {
	var errs []error
	for _, f := range ip6tablesFamilies() {
		if err := iptables.Cleanup(iptables.NewRunner(f)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

// removeNFTablesLeftovers removes nftables mode's table where it exists.
func removeNFTablesLeftovers() {
	for _, f := range kernelFamilies() {
		if !hasNFTablesTable(f) {
			continue
		}
		nft, err := nftables.New(f)
		if err != nil {
			klog.V(2).InfoS("nftables not available; nothing of it to remove", "family", f, "err", err)
			continue
		}
		if err := nftables.Cleanup(nft); err != nil {
			klog.ErrorS(err, "Removing nftables-mode rules failed", "family", f)
		}
	}
}

func cleanupNFTables() error {
	var errs []error
	for _, f := range kernelFamilies() {
		if nft, err := nftables.New(f); err == nil {
			if err := nftables.Cleanup(nft); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", f, err))
			}
		}
	}
	return errors.Join(errs...)
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
