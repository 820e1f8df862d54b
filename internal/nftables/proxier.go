package nftables

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/knftables"

	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
)

// syncTimeout bounds one nft invocation; a full sync of tens of thousands of Services
// takes seconds, so this only catches a hung nft.
const syncTimeout = 5 * time.Minute

// Proxier programs one IP family's Services into that family's kube-proxy table.
type Proxier struct {
	params Params
	nft    Kernel
	// clock dates the chains whose deletion waits chainDeleteDelay.
	clock clock.PassiveClock
	// metrics receives the count of ports without local endpoints.
	metrics *metrics.Metrics

	mu sync.Mutex
	// state is what the kernel holds after the last successful sync; nil when that is
	// unknown (before the first sync, after a failure): the next sync rebuilds the table.
	state *state
	// synced is set once a sync succeeded, so Flushed has something to miss.
	synced atomic.Bool
	// inPlaceFailed is set when a rebuild in place (see rebuildInPlace) failed: the
	// table may hold objects of another version that clash with ours, so the next
	// rebuild replaces it. A successful sync clears it.
	inPlaceFailed bool
}

// rebuild is how a sync that does not know what the kernel holds (the first sync of
// this process, or the one after a failure) treats the table it finds.
type rebuild int

const (
	// rebuildNone: the previous sync's state is known; nothing is rebuilt.
	rebuildNone rebuild = iota
	// rebuildApart: the table is missing or serves nothing (its services chain has no
	// rule): it is deleted and recreated, and a full sync's elements follow over
	// netlink, as no traffic depends on them yet.
	rebuildApart
	// rebuildReplace: the table is deleted and recreated in one transaction, elements
	// included. Used only when the table could not be read or a rebuild in place
	// failed: it swaps the base chains, and so the hooks, under traffic, and it
	// drops what other software added to the table.
	rebuildReplace
	// rebuildInPlace: the table serves traffic (a restart of kproxy, a failed sync):
	// it is read, and every object is rewritten in place in one transaction while the
	// base chains, and so their hooks, stay; objects no longer wanted are retired.
	rebuildInPlace
)

// chooseRebuild decides how to rebuild a table whose content is unknown, from the
// rules its services chain holds (countErr: they could not be counted) and whether
// the last rebuild in place failed.
func chooseRebuild(serviceRules int, countErr error, inPlaceFailed bool) rebuild {
	switch {
	case countErr == nil && serviceRules == 0:
		return rebuildApart
	case countErr != nil || inPlaceFailed:
		return rebuildReplace
	}
	return rebuildInPlace
}

// written says how a sync wrote the kernel, for its log line.
type written struct {
	// operations is the number of operations the sync wrote.
	operations int
	// via is "nft" (Kernel.Run), "netlink" (Kernel.writeElements), "nft+netlink" (the
	// rules by nft, then the elements by netlink) or "none".
	via string
}

// New returns the Kernel of the family's kube-proxy table. Listing goes over netlink:
// the nft CLI takes seconds to list a table of ten thousand Services. Rules are
// counted and elements written over netlink too.
func New(f model.Family) (Kernel, error) {
	nft, err := knftables.New(nftFamily(f), TableName, knftables.UseNetlink)
	if err != nil {
		return nil, err
	}
	return kernelTable{Interface: nft, family: f}, nil
}

func nftFamily(f model.Family) knftables.Family {
	if f == model.IPv6 {
		return knftables.IPv6Family
	}
	return knftables.IPv4Family
}

// NewProxier returns a Proxier that programs p.Family through nft, whose family must be
// the same, reporting to m. The node's parameters in p (LocalDetector, NodePortAll,
// NodePortIPs) are replaced at each sync by the snapshot's, when it has them. clk
// dates the chains that wait for deletion (clock.RealClock in production).
func NewProxier(p Params, nft Kernel, clk clock.PassiveClock, m *metrics.Metrics) *Proxier {
	return &Proxier{params: p, nft: nft, clock: clk, metrics: m}
}

// Family is the IP family this proxier programs.
func (p *Proxier) Family() model.Family { return p.params.Family }

// Sync writes the snapshot into the kernel in one nft transaction: in full, or
// (full=false) only what the Services in snap.Changed changed. On error the caller must
// make the next sync full (this Proxier also forgets what the kernel holds, so its next
// sync rebuilds the table whatever full says). It logs to ctx's logger.
func (p *Proxier) Sync(ctx context.Context, snap *model.Snapshot, full bool) error {
	_, err := p.write(ctx, snap, full)
	return err
}

// write is Sync, saying how it wrote the kernel.
func (p *Proxier) write(ctx context.Context, snap *model.Snapshot, full bool) (written, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	logger := klog.FromContext(ctx)
	start := time.Now()
	params := p.resolveParams(snap)
	prev := p.state
	if prev == nil || prev.nodePortAll != params.NodePortAll || prev.detector != params.LocalDetector || snap.NodeChanged {
		// The fixed rules depend on these; the firewall chains on the Node's addresses.
		full = true
	}
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()

	var kernel map[string][]string
	if full && prev != nil {
		// A table flushed behind our back (nft flush table) keeps its chains, empty:
		// then nothing of it can be trusted and it is rebuilt like on the first sync.
		if n, err := p.nft.CountRules(ctx, chainServices); err != nil || n == 0 {
			prev = nil
		}
	}
	if full && prev != nil {
		objs, err := p.nft.ListAll(ctx)
		switch {
		case knftables.IsNotFound(err):
			// The table is gone (nft flush ruleset): everything is re-added.
		case err != nil:
			p.state = nil
			return written{}, fmt.Errorf("%s nftables: listing table %s: %w", params.Family, TableName, err)
		default:
			kernel = objs
		}
	}
	var ruleCounts map[string]int
	if kernel != nil {
		counts, err := p.nft.RuleCounts(ctx)
		if err != nil {
			p.state = nil
			return written{}, fmt.Errorf("%s nftables: counting the rules of table %s: %w", params.Family, TableName, err)
		}
		ruleCounts = counts
	}
	// A table without Service rules (a node's first start, or after a flush) has no
	// traffic to keep while it is built: its elements, most of a full sync's work for
	// nft, are then written over netlink after the transaction that creates the
	// chains and maps. Otherwise a full sync is one atomic nft transaction.
	how := rebuildNone
	if prev == nil {
		n, err := p.nft.CountRules(ctx, chainServices)
		how = chooseRebuild(n, err, p.inPlaceFailed)
	}
	if how == rebuildInPlace {
		objs, err := p.nft.ListAll(ctx)
		if err != nil {
			return written{}, fmt.Errorf("%s nftables: listing table %s to rebuild it in place: %w", params.Family, TableName, err)
		}
		kernel = objs
	}
	apart := how == rebuildApart
	tx := p.nft.NewTransaction()
	next, ops := build(tx, buildInput{params: &params, snap: snap, full: full, prev: prev, kernel: kernel,
		ruleCounts: ruleCounts,
		now:        p.clock.Now(), elementsApart: apart, replaceTable: apart || how == rebuildReplace})
	via := "nft"
	var err error
	switch {
	case apart:
		via = "nft+netlink"
		if err = p.nft.Run(ctx, tx); err == nil {
			err = writeApart(ctx, p.nft, ops)
		}
	case tx.NumOperations() == 0:
		via = "none"
	case tx.NumOperations() == len(ops):
		// Nothing but element adds and deletes.
		via = "netlink"
		err = p.nft.writeElements(ctx, ops)
	default:
		err = p.nft.Run(ctx, tx)
	}
	if err != nil {
		p.state = nil
		p.inPlaceFailed = how == rebuildInPlace
		logger.V(4).Info("Failed nftables transaction", "family", params.Family, "via", via, "transaction", tx.String())
		return written{}, fmt.Errorf("%s nftables: transaction of %d operations (full=%v, via %s) failed: %w",
			params.Family, tx.NumOperations(), full || prev == nil, via, err)
	}
	p.state = next
	p.inPlaceFailed = false
	internal, external := next.noLocalEndpoints()
	p.metrics.NoLocalEndpointsTotal.WithLabelValues("internal", params.Family.String()).Set(float64(internal))
	p.metrics.NoLocalEndpointsTotal.WithLabelValues("external", params.Family.String()).Set(float64(external))
	w := written{operations: tx.NumOperations(), via: via}
	if apart {
		w.operations += len(ops)
	}
	p.synced.Store(true)
	logger.V(2).Info("Synced nftables rules", "family", params.Family, "full", full || prev == nil,
		"services", len(snap.Services), "changed", len(snap.Changed), "operations", w.operations,
		"via", via, "elapsed", time.Since(start))
	return w, nil
}

// resolveParams fills in the node's parameters of this sync.
func (p *Proxier) resolveParams(snap *model.Snapshot) Params {
	params := p.params
	if node, ok := snap.NodeParams(params.Family); ok {
		params.LocalDetector = DetectorFor(node.LocalTraffic)
		params.NodePortAll, params.NodePortIPs = node.NodePortAll, node.NodePortIPs
	}
	return params
}

// Flushed reports whether the table was deleted or flushed behind kproxy's back (nft
// flush ruleset, a firewall reload): the services chain always holds rules, so one
// `nft list chain` tells. Cheap enough to be called several times a second.
func (p *Proxier) Flushed(ctx context.Context) bool {
	if !p.synced.Load() {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := p.nft.CountRules(ctx, chainServices)
	if err != nil {
		klog.FromContext(ctx).V(2).Info("Cannot check the nftables table", "family", p.params.Family, "err", err)
		return false
	}
	return n == 0
}

// Cleanup deletes the family's kube-proxy table (kproxy's or upstream kube-proxy's),
// with everything in it. A missing table is not an error.
func Cleanup(nft knftables.Interface) error {
	tx := nft.NewTransaction()
	// Adding first makes the delete succeed when the table does not exist.
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	if err := nft.Run(context.Background(), tx); err != nil && !knftables.IsNotFound(err) {
		return fmt.Errorf("deleting nftables table %s: %w", TableName, err)
	}
	return nil
}
