// Package userspace is kproxy's userspace proxy mode, the fallback for nodes without
// netfilter: kproxy itself listens on every Service address and NodePort (TCP and
// UDP) and relays each connection or datagram flow to an endpoint. The Service
// addresses are made local by putting them on an interface kproxy owns (kproxy0).
//
// The package has three parts: the planner (plan.go) turns a snapshot into the
// wanted addresses, listeners and endpoint sets; the address manager (addrs.go) and
// listener manager (listeners.go) make the node match; the relays (tcp.go, udp.go,
// balancer.go) move the traffic.
package userspace

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kproxy/kproxy/internal/model"
)

// Defaults of Params.
const (
	DefaultUDPIdleTimeout = 30 * time.Second
	DefaultMaxUDPFlows    = 4096
	DefaultDialTimeout    = 2 * time.Second
	DefaultDialAttempts   = 3
)

// Params configure one family's Proxier. Zero values take the defaults.
type Params struct {
	Family model.Family
	// ClusterCIDRs are the pod ranges. Pods (and the node itself) reaching a
	// NodePort, externalIP or LoadBalancer IP of an externalTrafficPolicy Local Service
	// get the internal policy's endpoints, as upstream does.
	ClusterCIDRs []netip.Prefix
	// UDPIdleTimeout ends a UDP flow with no datagram either way for that long.
	UDPIdleTimeout time.Duration
	// MaxUDPFlows bounds each UDP listener's flow table; datagrams of new flows beyond
	// it are dropped.
	MaxUDPFlows int
	// DialTimeout and DialAttempts bound how a TCP connection reaches an endpoint:
	// after DialAttempts endpoints failed (refused or timed out) the client is reset.
	DialTimeout  time.Duration
	DialAttempts int
	// Interface holds the Service addresses; DefaultInterface when empty.
	Interface string
}

// Proxier is the userspace backend of one IP family.
type Proxier struct {
	params    Params
	env       *relayEnv
	addrs     *addrManager
	listeners *listenerManager
	// applying serialises Sync and Stop, which both change the listeners.
	applying sync.Mutex

	mu sync.Mutex
	// held is what the last sync put on the interface, for Flushed.
	held   map[netip.Addr]struct{}
	synced bool
}

// NewProxier returns the userspace backend for p.Family. It touches nothing until
// the first Sync.
func NewProxier(p Params) *Proxier {
	if p.UDPIdleTimeout <= 0 {
		p.UDPIdleTimeout = DefaultUDPIdleTimeout
	}
	if p.MaxUDPFlows <= 0 {
		p.MaxUDPFlows = DefaultMaxUDPFlows
	}
	if p.DialTimeout <= 0 {
		p.DialTimeout = DefaultDialTimeout
	}
	if p.DialAttempts <= 0 {
		p.DialAttempts = DefaultDialAttempts
	}
	if p.Interface == "" {
		p.Interface = DefaultInterface
	}
	env := &relayEnv{
		family:       p.Family,
		dialTimeout:  p.DialTimeout,
		dialAttempts: p.DialAttempts,
		udpIdle:      p.UDPIdleTimeout,
		maxUDPFlows:  p.MaxUDPFlows,
		clusterCIDRs: p.ClusterCIDRs,
		clock:        clock.RealClock{},
	}
	return &Proxier{
		params:    p,
		env:       env,
		addrs:     &addrManager{link: p.Interface, family: p.Family},
		listeners: newListenerManager(env),
	}
}

// Family is part of proxy.Backend.
func (p *Proxier) Family() model.Family { return p.params.Family }

// Sync is part of proxy.Backend. Every sync plans from the whole snapshot (the plan is
// cheap next to a netlink round trip) and applies only the differences: addresses are
// added before listeners bind them and removed after the listeners on them stopped.
// It, and the listeners it starts, log to ctx's logger.
func (p *Proxier) Sync(ctx context.Context, snap *model.Snapshot, full bool) error {
	p.applying.Lock()
	defer p.applying.Unlock()
	logger := klog.FromContext(ctx)
	link, err := p.addrs.ensureLink(logger)
	if err != nil {
		return fmt.Errorf("userspace %s: %w", p.params.Family, err)
	}
	node, err := p.addrs.nodeAddrs(link)
	if err != nil {
		return fmt.Errorf("userspace %s: %w", p.params.Family, err)
	}
	p.env.nodeAddrs.Store(&node)
	// Where NodePorts listen: all addresses (one wildcard socket per port) or the
	// node's NodePort addresses of this sync.
	np := nodePortTargets{all: true}
	if params, ok := snap.NodeParams(p.params.Family); ok {
		np.all, np.addrs = params.NodePortAll, params.NodePortIPs
	}
	pl := makePlan(snap, p.params.Family, np)
	// An address the node already has (an externalIP that is a node IP) is local
	// anyway; holding a second copy would make removing ours disturb the node's.
	want := map[netip.Addr]struct{}{}
	for ip := range pl.addrs {
		if _, own := node[ip]; !own {
			want[ip] = struct{}{}
		}
	}
	var errs []error
	if err := p.addrs.add(logger, link, want); err != nil {
		errs = append(errs, err)
	}
	if err := p.listeners.apply(logger, pl); err != nil {
		errs = append(errs, err)
	}
	if err := p.addrs.removeExcept(logger, link, want); err != nil {
		errs = append(errs, err)
	}
	p.mu.Lock()
	p.held, p.synced = want, true
	p.mu.Unlock()
	logger.V(3).Info("Userspace sync done", "family", p.params.Family, "full", full, "listeners", len(pl.listeners), "addresses", len(want))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("userspace %s: %w", p.params.Family, err)
	}
	return nil
}

// Flushed is part of proxy.Backend: it reports the interface or one of the Service
// addresses gone behind kproxy's back (the next sync restores them).
func (p *Proxier) Flushed(context.Context) bool {
	p.mu.Lock()
	held, synced := p.held, p.synced
	p.mu.Unlock()
	if !synced {
		return false
	}
	link, err := netlink.LinkByName(p.params.Interface)
	if err != nil {
		return true
	}
	have, err := p.addrs.held(link)
	if err != nil {
		return false
	}
	for ip := range held {
		if _, ok := have[ip]; !ok {
			return true
		}
	}
	return false
}

// Stop closes every listener and relayed connection and returns once their
// goroutines have ended; the addresses stay (Cleanup removes them).
func (p *Proxier) Stop() {
	p.applying.Lock()
	defer p.applying.Unlock()
	p.listeners.stopAll()
}

// RunBackground is part of proxy.Background: the listeners and their relays, started
// by the syncs, live until ctx ends, and are then stopped.
func (p *Proxier) RunBackground(ctx context.Context) {
	<-ctx.Done()
	p.Stop()
}
