package main

import (
	"context"
	"fmt"
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
	"github.com/kproxy/kproxy/internal/portreserve"
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

	m, err := modeNamed(cfg.Mode)
	if err != nil {
		return err
	}
	// nftables mode answers NodePorts on the primary address by default, like upstream.
	selector, err := nodeaddr.Parse(cfg.NodePortAddresses, cfg.Mode == "nftables")
	if err != nil {
		return err
	}
	// The node's own parameters, resolved at every sync for every backend and the
	// health check servers.
	node := &nodeaddr.Resolver{
		NodePorts: selector,
		DetectLocal: nodeaddr.DetectLocal{Mode: cfg.DetectLocalMode, ClusterCIDRs: cfg.ClusterCIDRs,
			BridgeInterface: cfg.BridgeInterface, InterfacePrefix: cfg.InterfaceNamePrefix},
		LocalAddrs: nodeaddr.LocalAddrs,
	}
	backends, err := newBackends(cfg, m)
	if err != nil {
		return err
	}
	var p *proxy.Proxy
	nodePorts := portreserve.New(cfg.SyncPeriod, portreserve.Hooks{
		Failure: func(port portreserve.Port) {
			metrics.NodePortReservationFailuresTotal.WithLabelValues(port.Protocol).Inc()
		},
		Held: recordReserved,
	})
	defer nodePorts.Close()
	health := healthcheck.NewProxyHealth(2*cfg.SyncPeriod, func() (time.Time, time.Time) { return p.Status() }, nil)
	serviceHealth := healthcheck.NewServiceHealth(health.Healthy)
	defer serviceHealth.Stop()
	p = proxy.New(cfg.NodeName, backends, proxy.Options{
		MinSyncPeriod: cfg.MinSyncPeriod,
		SyncPeriod:    cfg.SyncPeriod,
		// Several times a second: the checks are netlink reads (iptables-nft, nftables)
		// or a few execs (iptables-legacy), and a flushed node drops Service traffic.
		FlushCheckInterval: 200 * time.Millisecond,
		Conntrack:          conntrack.NewCleaner(),
		SyncFailed:         syncFailureMetric(cfg.Mode, backends),
		ResolveNode:        node.Resolve,
		AfterSync: func(snap *model.Snapshot, _ bool, _ time.Duration) {
			serviceHealth.Sync(snap)
			// userspace mode's own listeners hold the NodePorts; a reservation
			// socket would answer for Services without endpoints and block them.
			if cfg.Mode != "userspace" {
				nodePorts.Sync(portreserve.FromSnapshot(snap))
			}
		},
	})

	src, err := newSource(cfg, p.Handler())
	if err != nil {
		return err
	}
	go healthcheck.Serve(ctx, cfg.HealthzBindAddress, health.Handler())
	go healthcheck.Serve(ctx, cfg.MetricsBindAddress, metrics.Handler(cfg.Mode, cfg.KubeProxy.EnableProfiling))

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

// syncFailureMetric counts failed syncs in the mode's own metric; iptables mode counts
// its failed restores inside the backend, which knows full from partial restores.
func syncFailureMetric(mode string, backends []proxy.Backend) func(model.Family, bool, error) {
	if mode != "nftables" {
		return nil
	}
	for _, b := range backends {
		// Present at 0 from the start, so rate() and alerts work before a failure.
		metrics.NFTablesSyncFailuresTotal.WithLabelValues(b.Family().String())
		metrics.NFTablesCleanupFailuresTotal.WithLabelValues(b.Family().String())
	}
	return func(f model.Family, _ bool, _ error) {
		metrics.NFTablesSyncFailuresTotal.WithLabelValues(f.String()).Inc()
	}
}

// recordReserved sets the gauge of held NodePort sockets per protocol.
func recordReserved(held []portreserve.Port) {
	n := map[string]float64{"TCP": 0, "UDP": 0}
	for _, p := range held {
		n[p.Protocol]++
	}
	for proto, v := range n {
		metrics.NodePortsReserved.WithLabelValues(proto).Set(v)
	}
}
