package userspace

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// balancer picks the endpoint for each new connection or UDP flow of one ServicePort:
// round robin over the endpoint set the traffic's policy allows, with ClientIP session
// affinity when the Service asks for it. The sync loop replaces its endpoint sets;
// the relays call pick concurrently.
type balancer struct {
	mu sync.Mutex
	// cluster and local are the plan's ClusterEndpoints and LocalEndpoints
	// sets, in the snapshot's sorted order.
	cluster, local []netip.AddrPort
	// next is the round-robin position of each set.
	nextCluster, nextLocal int
	// sticky > 0 enables ClientIP affinity with that idle timeout.
	sticky   time.Duration
	affinity map[netip.Addr]affinityEntry
	// lastExpiry bounds how often a large affinity map is swept.
	lastExpiry time.Time
	// clock times the affinity entries.
	clock clock.PassiveClock
}

type affinityEntry struct {
	endpoint netip.AddrPort
	lastUsed time.Time
}

// policySet names which endpoint set a pick draws from.
type policySet int

const (
	clusterSet policySet = iota
	localSet
)

func newBalancer(clk clock.PassiveClock) *balancer {
	return &balancer{affinity: map[netip.Addr]affinityEntry{}, clock: clk}
}

// update installs new endpoint sets and affinity timeout. It reports whether anything
// changed. Affinity entries pointing at endpoints that left both sets are dropped, so
// a client stuck to a removed endpoint is rebalanced at its next connection.
func (b *balancer) update(cluster, local []netip.AddrPort, sticky time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if slices.Equal(b.cluster, cluster) && slices.Equal(b.local, local) && b.sticky == sticky {
		return false
	}
	b.cluster, b.local, b.sticky = cluster, local, sticky
	if sticky == 0 {
		clear(b.affinity)
	}
	for ip, e := range b.affinity {
		if !slices.Contains(cluster, e.endpoint) && !slices.Contains(local, e.endpoint) {
			delete(b.affinity, ip)
		}
	}
	return true
}

// contains reports whether ep is in either set: a UDP flow to an endpoint that is
// not is stale and gets closed.
func (b *balancer) contains(ep netip.AddrPort) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Contains(b.cluster, ep) || slices.Contains(b.local, ep)
}

// pick chooses the endpoint for a new connection from client. skip lists endpoints
// that already failed for this connection. ok is false when the set is empty (or every
// endpoint in it was skipped).
func (b *balancer) pick(set policySet, client netip.Addr, skip []netip.AddrPort) (netip.AddrPort, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	eps, next := b.cluster, &b.nextCluster
	if set == localSet {
		eps, next = b.local, &b.nextLocal
	}
	now := b.clock.Now()
	if b.sticky > 0 {
		if e, ok := b.affinity[client]; ok && now.Sub(e.lastUsed) < b.sticky &&
			slices.Contains(eps, e.endpoint) && !slices.Contains(skip, e.endpoint) {
			b.affinity[client] = affinityEntry{e.endpoint, now}
			return e.endpoint, true
		}
	}
	for range eps {
		*next %= len(eps)
		ep := eps[*next]
		*next++
		if slices.Contains(skip, ep) {
			continue
		}
		if b.sticky > 0 {
			b.affinity[client] = affinityEntry{ep, now}
			b.expireLocked(now)
		}
		return ep, true
	}
	return netip.AddrPort{}, false
}

// expireLocked drops affinity entries idle for longer than the timeout once the map
// grows, so a stream of one-off clients cannot grow it without bound. The sweep runs
// at most once a second, so picks stay cheap under load.
func (b *balancer) expireLocked(now time.Time) {
	if len(b.affinity) < 1024 || now.Sub(b.lastExpiry) < time.Second {
		return
	}
	b.lastExpiry = now
	for ip, e := range b.affinity {
		if now.Sub(e.lastUsed) >= b.sticky {
			delete(b.affinity, ip)
		}
	}
}
