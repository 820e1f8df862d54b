// Package conntrack keeps the kernel's connection tracking table in step with the
// proxy rules: it deletes UDP and SCTP entries that still point at endpoints that no
// longer serve a Service (a client with a fixed source port would otherwise keep
// reaching the dead endpoint until the entry times out), and it applies the
// conntrack sysctls kube-proxy sets at startup.
package conntrack

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kproxy/kproxy/internal/model"
)

// Target describes flows of one service port in one family that must keep only the
// given endpoints.
type Target struct {
	// Protocol is unix.IPPROTO_UDP or unix.IPPROTO_SCTP; with UnNATedOnly also TCP.
	Protocol uint8
	// UnNATedOnly selects only flows to ServiceIPs:Port that were never DNATed (their
	// reply comes from the original destination): their first packet went out before
	// the Service's rules existed, and since NAT is decided on a connection's first
	// packet, a client reusing that source port would bypass the Service until the
	// entry expires (120 s for an unanswered TCP SYN). Deleting them breaks nothing,
	// for any protocol. Keep and NodePort are ignored.
	UnNATedOnly bool
	// ServiceIPs are the ClusterIP, externalIPs and load-balancer IPs: flows whose
	// original destination is one of them with Port belong to the target. Addresses
	// of the other family are ignored.
	ServiceIPs []netip.Addr
	Port       uint16
	// NodePort selects flows whose original destination port is NodePort, whatever
	// the destination address (any local IP); 0 means none. Like upstream, callers
	// should set it only while the service has a serving endpoint.
	NodePort uint16
	// Keep holds the serving endpoints: an entry whose reply source (the DNAT
	// target) is one of them survives. Nil or empty deletes every matching entry.
	Keep map[netip.AddrPort]struct{}
}

// destKey identifies flows by their original destination address and port.
type destKey struct {
	proto uint8
	dest  netip.AddrPort
}

// nodePortKey identifies flows by their original destination port alone.
type nodePortKey struct {
	proto uint8
	port  uint16
}

// keepSet is the set of reply sources that may survive; empty keeps nothing.
type keepSet map[netip.AddrPort]struct{}

// flowMatcher decides which conntrack flows are stale. It is built once per Clean
// so each flow costs two map lookups however many targets there are.
// It implements netlink.CustomConntrackFilter.
type flowMatcher struct {
	byDest     map[destKey]keepSet
	byNodePort map[nodePortKey]keepSet
	unNATed    map[destKey]struct{}
}

var _ netlink.CustomConntrackFilter = (*flowMatcher)(nil)

// newFlowMatcher indexes the targets for one family. Targets that name the same
// destination are merged: an entry survives if any of them keeps its endpoint,
// erring on the side of not breaking a flow.
func newFlowMatcher(family model.Family, targets []Target) (*flowMatcher, error) {
	m := &flowMatcher{byDest: map[destKey]keepSet{}, byNodePort: map[nodePortKey]keepSet{}, unNATed: map[destKey]struct{}{}}
	for i := range targets {
		t := &targets[i]
		if t.UnNATedOnly && (t.Protocol == unix.IPPROTO_TCP || t.Protocol == unix.IPPROTO_UDP || t.Protocol == unix.IPPROTO_SCTP) {
			for _, ip := range t.ServiceIPs {
				if ip = ip.Unmap(); ip.IsValid() && model.FamilyOf(ip) == family && t.Port != 0 {
					m.unNATed[destKey{t.Protocol, netip.AddrPortFrom(ip, t.Port)}] = struct{}{}
				}
			}
			continue
		}
		if t.Protocol != unix.IPPROTO_UDP && t.Protocol != unix.IPPROTO_SCTP {
			return nil, fmt.Errorf("conntrack target %d (port %d, service IPs %v): protocol %d is neither UDP nor SCTP", i, t.Port, t.ServiceIPs, t.Protocol)
		}
		keep := normalizeKeep(t.Keep)
		for _, ip := range t.ServiceIPs {
			ip = ip.Unmap()
			if !ip.IsValid() || model.FamilyOf(ip) != family || t.Port == 0 {
				continue
			}
			k := destKey{t.Protocol, netip.AddrPortFrom(ip, t.Port)}
			m.byDest[k] = mergeKeep(m.byDest[k], keep)
		}
		if t.NodePort != 0 {
			k := nodePortKey{t.Protocol, t.NodePort}
			m.byNodePort[k] = mergeKeep(m.byNodePort[k], keep)
		}
	}
	return m, nil
}

// empty is true when no flow can match, so the table need not be listed at all.
func (m *flowMatcher) empty() bool {
	return len(m.byDest) == 0 && len(m.byNodePort) == 0 && len(m.unNATed) == 0
}

// MatchConntrackFlow reports whether the flow is stale: it goes to a target's
// service IP:port (or, failing that, to a target's NodePort) and its reply source is
// not one of that target's kept endpoints. A match on the exact service IP:port wins
// over a NodePort match, as the proxy rules check service IPs before NodePorts.
func (m *flowMatcher) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	proto := flow.Forward.Protocol
	dst, ok := addrOf(flow.Forward.DstIP)
	if !ok {
		return false
	}
	if _, found := m.unNATed[destKey{proto, netip.AddrPortFrom(dst, flow.Forward.DstPort)}]; found {
		replySrc, ok := addrOf(flow.Reverse.SrcIP)
		if ok && replySrc == dst && flow.Reverse.SrcPort == flow.Forward.DstPort {
			return true
		}
	}
	if proto != unix.IPPROTO_UDP && proto != unix.IPPROTO_SCTP {
		return false
	}
	keep, found := m.byDest[destKey{proto, netip.AddrPortFrom(dst, flow.Forward.DstPort)}]
	if !found {
		keep, found = m.byNodePort[nodePortKey{proto, flow.Forward.DstPort}]
	}
	if !found {
		return false
	}
	replySrc, ok := addrOf(flow.Reverse.SrcIP)
	if !ok {
		// A flow without a reply tuple cannot be told apart; leave it alone.
		return false
	}
	_, kept := keep[netip.AddrPortFrom(replySrc, flow.Reverse.SrcPort)]
	return !kept
}

// addrOf converts a netlink address to netip, folding IPv4-mapped IPv6 addresses
// to IPv4 so they compare equal to the model's addresses.
func addrOf(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// normalizeKeep returns keep with IPv4-mapped addresses folded to IPv4, copying only
// when such an address is present.
func normalizeKeep(keep map[netip.AddrPort]struct{}) keepSet {
	for ap := range keep {
		if ap.Addr().Is4In6() {
			out := make(keepSet, len(keep))
			for ap := range keep {
				out[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = struct{}{}
			}
			return out
		}
	}
	return keep
}

// mergeKeep unions two keep sets without modifying either; a nil old means the
// destination was not seen before.
func mergeKeep(old, add keepSet) keepSet {
	if old == nil {
		if add == nil {
			return keepSet{}
		}
		return add
	}
	if len(add) == 0 {
		return old
	}
	if len(old) == 0 {
		return add
	}
	out := make(keepSet, len(old)+len(add))
	for ap := range old {
		out[ap] = struct{}{}
	}
	for ap := range add {
		out[ap] = struct{}{}
	}
	return out
}
