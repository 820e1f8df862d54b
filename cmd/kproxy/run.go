package main

import (
	"context"
	"fmt"
	"net/netip"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/conntrack"
	"github.com/kproxy/kproxy/internal/healthcheck"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/nodeaddr"
	"github.com/kproxy/kproxy/internal/proxy"
)

// run starts the proxy and blocks until SIGTERM or SIGINT. The rules stay in the
// kernel when it returns, so connections keep flowing while kproxy restarts.
func run(cfg *config.Config) error {
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

	// nftables mode answers NodePorts on the primary address by default, like upstream.
	selector, err := nodeaddr.Parse(cfg.NodePortAddresses, cfg.Mode == "nftables")
	if err != nil {
		return err
	}
	backends, err := newBackends(cfg, selector)
	if err != nil {
		return err
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
