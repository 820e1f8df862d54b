package userspace

import (
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/utils/clock"

	"github.com/kproxy/kproxy/internal/model"
)

// route is what a listener currently serves: replaced as a whole when a sync changes
// the Service, so a relay reads one consistent view without locks.
type route struct {
	spec listenerSpec
	bal  *balancer
}

// allowed applies loadBalancerSourceRanges (set only on LoadBalancer IP listeners).
func (r *route) allowed(client netip.Addr) bool {
	return r.spec.firewall == nil || r.spec.firewall.Admits(client)
}

// setFor chooses the endpoint set for a client. ClusterIP listeners follow
// internalTrafficPolicy, external listeners externalTrafficPolicy, except where the
// plan short-circuits clients inside the cluster (pods, the node itself) to the
// Cluster set: eTP Local exists to keep the client's address, which only matters for
// clients from outside.
func (r *route) setFor(client netip.Addr, env *relayEnv) policySet {
	if !r.spec.external {
		return choose(r.spec.internalLocal)
	}
	if r.spec.shortCircuit && env.isInternalClient(client) {
		return clusterSet
	}
	return choose(r.spec.externalLocal)
}

func choose(local bool) policySet {
	if local {
		return localSet
	}
	return clusterSet
}

// relayEnv holds what every relay of one family shares.
type relayEnv struct {
	family      model.Family
	dialTimeout time.Duration
	// dialAttempts bounds how many endpoints a TCP connection tries before it is reset.
	dialAttempts int
	udpIdle      time.Duration
	maxUDPFlows  int
	clusterCIDRs []netip.Prefix
	// nodeAddrs is the node's own addresses, refreshed at every sync.
	nodeAddrs atomic.Pointer[map[netip.Addr]struct{}]
	// clock times session affinity.
	clock clock.PassiveClock
}

// isInternalClient reports whether a client is a pod (inside a cluster CIDR) or the
// node itself.
func (e *relayEnv) isInternalClient(ip netip.Addr) bool {
	if ip.IsLoopback() {
		return true
	}
	for _, c := range e.clusterCIDRs {
		if c.Contains(ip) {
			return true
		}
	}
	if m := e.nodeAddrs.Load(); m != nil {
		_, ok := (*m)[ip]
		return ok
	}
	return false
}

func (e *relayEnv) network(proto string) string {
	if e.family == model.IPv6 {
		return proto + "6"
	}
	return proto + "4"
}

// listenControl sets the options every listening socket gets. SO_REUSEPORT lets a
// Service address bind a port that a wildcard NodePort socket also holds (the kernel
// prefers the exact address). FREEBIND lets the bind succeed even if the address was
// removed behind kproxy's back; it starts working again once the address is restored.
// Wildcard UDP sockets ask for each datagram's destination, to answer from it.
func listenControl(f model.Family, pktinfo bool) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			s := int(fd)
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
				return
			}
			if f == model.IPv6 {
				serr = unix.SetsockoptInt(s, unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
				if serr == nil && pktinfo {
					serr = unix.SetsockoptInt(s, unix.SOL_IPV6, unix.IPV6_RECVPKTINFO, 1)
				}
				return
			}
			serr = unix.SetsockoptInt(s, unix.SOL_IP, unix.IP_FREEBIND, 1)
			if serr == nil && pktinfo {
				serr = unix.SetsockoptInt(s, unix.SOL_IP, unix.IP_PKTINFO, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}
