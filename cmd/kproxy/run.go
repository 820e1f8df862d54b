package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/conntrack"
	"github.com/kproxy/kproxy/internal/healthcheck"
	"github.com/kproxy/kproxy/internal/iptables"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/nodeaddr"
	"github.com/kproxy/kproxy/internal/proxy"
)

// run starts the proxy and blocks until SIGTERM or SIGINT. The rules stay in the
// kernel when it returns, so connections keep flowing while kproxy restarts.
func run(cfg *config.Config) error {
	if cfg.Mode != "iptables" {
		return fmt.Errorf("--proxy-mode %s is not implemented yet (implemented: iptables)", cfg.Mode)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if err := conntrack.SetSysctls(conntrack.Sysctls{
		MaxPerCore:            cfg.Conntrack.MaxPerCore,
		Min:                   cfg.Conntrack.Min,
		TCPEstablishedTimeout: cfg.Conntrack.TCPEstablishedTimeout,
		TCPCloseWaitTimeout:   cfg.Conntrack.TCPCloseWaitTimeout,
		TCPBeLiberal:          cfg.Conntrack.TCPBeLiberal,
		UDPTimeout:            cfg.Conntrack.UDPTimeout,
		UDPStreamTimeout:      cfg.Conntrack.UDPStreamTimeout,
	}); err != nil {
		klog.ErrorS(err, "Setting conntrack sysctls failed; continuing")
	}

	selector, err := nodeaddr.Parse(cfg.NodePortAddresses, false)
	if err != nil {
		return err
	}
	var backends []proxy.Backend
	for _, f := range families() {
		backends = append(backends, iptables.NewProxier(iptablesParams(cfg, f), iptables.NewRunner(f), nodePortIPs(selector, f)))
	}
	var p *proxy.Proxy
	health := healthcheck.NewProxyHealth(2*cfg.SyncPeriod, func() (time.Time, time.Time) { return p.Status() }, nil)
	serviceHealth := healthcheck.NewServiceHealth(healthCheckAddrs(selector), health.Healthy)
	defer serviceHealth.Stop()
	p = proxy.New(cfg.NodeName, backends, proxy.Options{
		MinSyncPeriod:      cfg.MinSyncPeriod,
		SyncPeriod:         cfg.SyncPeriod,
		FlushCheckInterval: time.Second,
		Conntrack:          conntrack.NewCleaner(),
		AfterSync: func(snap *model.Snapshot, _ bool, _ time.Duration) {
			serviceHealth.Sync(snap)
		},
	})

	src, err := newSource(cfg, p.Handler())
	if err != nil {
		return err
	}
	go healthcheck.Serve(ctx, cfg.HealthzBindAddress, health.Handler())
	go healthcheck.Serve(ctx, cfg.MetricsBindAddress, metrics.Handler(cfg.Mode))

	klog.InfoS("Starting kproxy", "version", version, "mode", cfg.Mode, "node", cfg.NodeName, "manifests", cfg.Manifests, "kubeconfig", cfg.Kubeconfig)
	srcErr := make(chan error, 1)
	go func() { srcErr <- src.Run(ctx) }()
	go p.Run(ctx)
	select {
	case <-ctx.Done():
		klog.InfoS("Stopping; the rules stay in the kernel")
		return nil
	case err := <-srcErr:
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("source: %w", err)
	}
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
		for _, c := range cfg.ClusterCIDRs {
			if model.FamilyOf(c.Addr()) == f {
				p.LocalDetector = iptables.DetectByCIDR(c)
			}
		}
	}
	return p
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

// cleanup removes the rules of every family.
func cleanup() error {
	var errs []error
	for _, f := range families() {
		if err := iptables.Cleanup(iptables.NewRunner(f)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

// healthCheckAddrs are the addresses health check node ports listen on: those that
// accept NodePorts (every address when nodePortAddresses selects all).
func healthCheckAddrs(sel *nodeaddr.Selector) []netip.Addr {
	if sel.MatchesAll() {
		return nil
	}
	local, err := nodeaddr.LocalAddrs()
	if err != nil {
		klog.ErrorS(err, "Cannot list local addresses for health check node ports")
	}
	var out []netip.Addr
	for _, f := range []model.Family{model.IPv4, model.IPv6} {
		out = append(out, sel.Resolve(f, nil, local)...)
	}
	return out
}
