package main

import (
	"context"
	"fmt"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/conntrack"
	"github.com/kproxy/kproxy/internal/healthcheck"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/nodeaddr"
	"github.com/kproxy/kproxy/internal/portreserve"
	"github.com/kproxy/kproxy/internal/proxy"
)

// run starts the proxy and blocks until SIGTERM or SIGINT. It returns once every
// goroutine it started has ended. The rules stay in the kernel when it returns, so
// connections keep flowing while kproxy restarts.
func run(cfg *config.Config) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := klog.FromContext(ctx)

	roots := conntrack.Roots{ProcSys: cfg.ProcSysDir, Sys: "/sys"}
	if err := conntrack.SetSysctlsAt(roots, conntrack.Sysctls{
		MaxPerCore:            cfg.Conntrack.MaxPerCore,
		Min:                   cfg.Conntrack.Min,
		TCPEstablishedTimeout: cfg.Conntrack.TCPEstablishedTimeout,
		TCPCloseWaitTimeout:   cfg.Conntrack.TCPCloseWaitTimeout,
		TCPBeLiberal:          cfg.Conntrack.TCPBeLiberal,
		UDPTimeout:            cfg.Conntrack.UDPTimeout,
		UDPStreamTimeout:      cfg.Conntrack.UDPStreamTimeout,
	}); err != nil {
		logger.Error(err, "Setting conntrack sysctls failed; continuing")
	}

	proxyMode, err := modeNamed(cfg.Mode)
	if err != nil {
		return err
	}
	selector, err := nodeaddr.Parse(cfg.NodePortAddresses, proxyMode.primaryNodePorts)
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
	reg := metrics.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		return err
	}
	clk := clock.RealClock{}
	backends, err := newBackends(cfg, proxyMode, m)
	if err != nil {
		return err
	}
	api, err := newAPIClient(cfg)
	if err != nil {
		return err
	}
	recorder, err := newRecorder(ctx, api)
	if err != nil {
		return err
	}
	defer recorder.Stop()
	var p *proxy.Proxy
	nodePorts := portreserve.New(cfg.SyncPeriod, portreserve.Hooks{
		Failure: func(port portreserve.Port) {
			m.NodePortReservationFailuresTotal.WithLabelValues(port.Protocol).Inc()
		},
		Held:     recordReserved(m),
		Conflict: nodePortConflictEvent(recorder, cfg.NodeName),
	})
	defer nodePorts.Close()
	health := healthcheck.NewProxyHealth(2*cfg.SyncPeriod, func() (time.Time, time.Time) { return p.Status() }, nil, clk, m)
	serviceHealth := healthcheck.NewServiceHealth(health.Healthy)
	defer serviceHealth.Stop()
	p = proxy.New(cfg.NodeName, backends, m, proxy.Options{
		MinSyncPeriod: cfg.MinSyncPeriod,
		SyncPeriod:    cfg.SyncPeriod,
		// Several times a second: the checks are netlink reads (iptables-nft, nftables)
		// or a few execs (iptables-legacy), and a flushed node drops Service traffic.
		FlushCheckInterval: 200 * time.Millisecond,
		Conntrack:          conntrack.NewCleaner(),
		SyncFailed:         syncFailureMetric(proxyMode, backends, m),
		ResolveNode:        node.Resolve,
		Problems: func(pr model.Problem) {
			recorder.Warning(&pr.Object, pr.Reason, eventActionSync, pr.Message)
		},
		Clock: clk,
		AfterSync: func(_ context.Context, snap *model.Snapshot, _ bool, _ time.Duration) {
			serviceHealth.Sync(snap)
			if !proxyMode.ownsNodePorts {
				nodePorts.Sync(portreserve.FromSnapshot(snap))
			}
		},
	})

	src, err := newSource(cfg, api, p.Handler())
	if err != nil {
		return err
	}
	// Every goroutine below ends with ctx; run cancels it when it returns for another
	// reason (the source failed) and waits for them all.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	readFill := func() (conntrack.Fill, error) { return conntrack.ReadFill(roots) }
	m.SetConntrackFillSource(func() (int, int, error) {
		f, err := readFill()
		return f.Entries, f.Max, err
	})
	wg.Go(func() { (&conntrack.FillWatch{Read: readFill, Clock: clk, Interval: 10 * time.Second}).Run(ctx) })
	wg.Go(func() { healthcheck.Serve(ctx, cfg.HealthzBindAddress, health.Handler()) })
	wg.Go(func() {
		healthcheck.Serve(ctx, cfg.MetricsBindAddress, metrics.Handler(reg, cfg.Mode, cfg.KubeProxy.EnableProfiling))
	})

	logger.Info("Starting kproxy", "version", version, "mode", cfg.Mode, "node", cfg.NodeName, "manifests", cfg.Manifests, "kubeconfig", cfg.Kubeconfig)
	srcErr := make(chan error, 1)
	wg.Go(func() { srcErr <- src.Run(ctx) })
	wg.Go(func() { p.Run(ctx) })
	select {
	case <-ctx.Done():
		logger.Info("Stopping; the rules stay in the kernel")
		return nil
	case err := <-srcErr:
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("source: %w", err)
	}
}

// syncFailureMetric counts failed syncs in the mode's own metric, for the modes that
// have one; iptables mode counts its failed restores inside the backend, which knows
// full from partial restores.
func syncFailureMetric(pm mode, backends []proxy.Backend, m *metrics.Metrics) func(model.Family, bool, error) {
	if !pm.countsSyncFailures {
		return nil
	}
	for _, b := range backends {
		// Present at 0 from the start, so rate() and alerts work before a failure.
		m.NFTablesSyncFailuresTotal.WithLabelValues(b.Family().String())
		m.NFTablesCleanupFailuresTotal.WithLabelValues(b.Family().String())
	}
	return func(f model.Family, _ bool, _ error) {
		m.NFTablesSyncFailuresTotal.WithLabelValues(f.String()).Inc()
	}
}

// recordReserved returns the hook that sets the gauge of held NodePort sockets per
// protocol.
func recordReserved(m *metrics.Metrics) func(held []portreserve.Port) {
	return func(held []portreserve.Port) {
		n := map[string]float64{"TCP": 0, "UDP": 0}
		for _, p := range held {
			n[p.Protocol]++
		}
		for proto, v := range n {
			m.NodePortsReserved.WithLabelValues(proto).Set(v)
		}
	}
}
