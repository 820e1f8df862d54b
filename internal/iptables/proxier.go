package iptables

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/sysctl"
)

// Proxier programs one IP family's Services into iptables.
type Proxier struct {
	params Params
	runner Runner
	// sysctl sets the kernel tunables the rules rely on.
	sysctl sysctl.Writer
	// metrics receives the restore failures and rule counts.
	metrics *metrics.Metrics
	// builder keeps the ruleset between syncs, so partial syncs do work in proportion
	// to the change.
	builder *Builder
	// rules counts the rules of each chain in the kernel, for the total metric.
	rules ruleCounts
	// programmed is set once a sync succeeded: only then can a missing canary mean a
	// flush. Flushed reads it from another goroutine, hence atomic.
	programmed atomic.Bool
}

// NewProxier returns a Proxier on the family's iptables r that reports to m; sysctls
// sets the kernel tunables the rules need (sysctl.Dir.Set on a node). The node's
// parameters in p (LocalDetector, NodePortAll, NodePortIPs) are replaced at each sync
// by the snapshot's, when it has them (model.Snapshot.NodeParams).
func NewProxier(p Params, r Runner, sysctls sysctl.Writer, m *metrics.Metrics) *Proxier {
	return &Proxier{params: p, runner: r, sysctl: sysctls, metrics: m, builder: NewBuilder()}
}

// Family is the IP family this proxier programs.
func (p *Proxier) Family() model.Family { return p.params.Family }

// Sync writes the snapshot into the kernel: in full, or (full=false) only the chains of
// the Services that changed. On error the caller must make the next sync full. It logs
// to ctx's logger.
func (p *Proxier) Sync(ctx context.Context, snap *model.Snapshot, full bool) error {
	logger := klog.FromContext(ctx)
	start := time.Now()
	params := p.params
	if node, ok := snap.NodeParams(params.Family); ok {
		params.LocalDetector = DetectorFor(node.LocalTraffic)
		params.NodePortAll, params.NodePortIPs = node.NodePortAll, node.NodePortIPs
	}
	if full {
		if err := p.setupKernel(logger); err != nil {
			return err
		}
	}
	var kernelChains map[string]struct{}
	var jumps map[string][]string
	if full || !p.programmed.Load() {
		// One save per table tells the chains an earlier run left (to delete) and the
		// jump rules that are missing (to insert): the whole sync is then one restore.
		saved := map[string][]byte{}
		for _, table := range []string{"filter", "nat"} {
			save, err := p.runner.SaveSkeleton(table)
			if err != nil {
				return err
			}
			saved[table] = save
		}
		kernelChains = map[string]struct{}{}
		for _, c := range chainsIn(saved["nat"]) {
			if isServiceChain(c) || isTreeChain(c) {
				kernelChains[c] = struct{}{}
			}
		}
		jumps = missingJumps(jumpRules(params.Family == model.IPv4 && params.LocalhostNodePorts), saved)
		full = true
	}
	rs := p.builder.Build(BuildInput{Params: params, Snapshot: snap, Full: full, KernelChains: kernelChains, JumpRules: jumps})
	fam := params.Family.String()
	if !full && rs.FilterRules+rs.NatRules == 0 && !bytes.Contains(rs.Data(), []byte("\n:")) {
		// Nothing of this family changed (an empty restore still costs a process).
		return nil
	}
	if err := restoreInput(p.runner, rs.Input); err != nil {
		if full {
			p.metrics.IPTablesRestoreFailuresTotal.WithLabelValues(fam).Inc()
		} else {
			p.metrics.IPTablesPartialRestoreFailuresTotal.WithLabelValues(fam).Inc()
		}
		p.builder.Reset()
		return fmt.Errorf("%s restore (full=%v, %d bytes): %w", params.Family, full, rs.Input.Len(), err)
	}
	if p.rules == nil {
		p.rules = ruleCounts{}
	}
	p.rules.apply(rs.Input, full)
	p.programmed.Store(true)
	p.metrics.IPTablesRulesLastSync.WithLabelValues("filter", fam).Set(float64(rs.FilterRules))
	p.metrics.IPTablesRulesLastSync.WithLabelValues("nat", fam).Set(float64(rs.NatRules))
	p.metrics.IPTablesRulesTotal.WithLabelValues("filter", fam).Set(float64(p.rules.total("filter")))
	p.metrics.IPTablesRulesTotal.WithLabelValues("nat", fam).Set(float64(p.rules.total("nat")))
	p.metrics.NoLocalEndpointsTotal.WithLabelValues("internal", fam).Set(float64(rs.NoLocalEndpoints["internal"]))
	p.metrics.NoLocalEndpointsTotal.WithLabelValues("external", fam).Set(float64(rs.NoLocalEndpoints["external"]))
	logger.V(2).Info("Synced iptables rules", "family", params.Family, "full", full,
		"services", len(snap.Services), "natRules", rs.NatRules, "filterRules", rs.FilterRules,
		"bytes", rs.Input.Len(), "elapsed", time.Since(start))
	return nil
}

// setupKernel prepares what the rules rely on: the canary chains and, for localhost
// NodePorts, route_localnet (without it the kernel drops 127.0.0.1 after DNAT).
func (p *Proxier) setupKernel(logger klog.Logger) error {
	if p.params.Family == model.IPv4 && p.params.LocalhostNodePorts {
		if err := p.sysctl("net/ipv4/conf/all/route_localnet", "1"); err != nil {
			logger.Error(err, "Cannot enable route_localnet; NodePorts on 127.0.0.1 will not work")
		}
	}
	return nil
}

// Flushed reports whether someone removed kproxy's canary chain or emptied its chains (iptables -F / -X,
// a firewall restart): the rules must then be rewritten in full.
func (p *Proxier) Flushed(context.Context) bool {
	return p.programmed.Load() && p.runner.ChainsFlushed(flushProbes)
}

// Cleanup removes all of this backend's rules from the kernel.
func (p *Proxier) Cleanup() error { return Cleanup(p.runner) }
