package proxy

import (
	"net/netip"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/conntrack"
	"github.com/kproxy/kproxy/internal/model"
)

// StaleFlows lists the conntrack entries a sync made stale, for the connectionless
// protocols (UDP, SCTP): a datagram flow keeps its DNAT target for as long as its entry
// lives, so a client sending from a fixed port would keep reaching a dead endpoint.
// For each changed port: flows to addresses it still serves keep only the endpoints
// still reachable; flows to addresses (or a NodePort) it no longer serves go entirely.
func StaleFlows(snap *model.Snapshot, f model.Family) []conntrack.Target {
	var out []conntrack.Target
	for nn := range snap.Changed {
		current := map[model.ServicePortName]*model.ServicePort{}
		for _, sp := range snap.PortsByService[nn] {
			current[sp.Name] = sp
		}
		previous := map[model.ServicePortName]bool{}
		for _, old := range snap.PreviousPorts[nn] {
			previous[old.Name] = true
		}
		// A port that is new in this sync (its Service and endpoints may arrive in one
		// sync) can already have flows: datagrams sent before the rules existed made
		// entries without DNAT, which would keep by-passing the rules for as long as
		// the client keeps its source port. Like upstream, entries to its addresses
		// whose reply source is not a reachable endpoint go.
		for _, sp := range snap.PortsByService[nn] {
			proto, ok := ipProto(sp.Protocol)
			if !ok || previous[sp.Name] {
				continue
			}
			keep := reachable(snap, sp, f)
			if ips := serviceIPs(sp, f); len(ips) > 0 {
				out = append(out, conntrack.Target{Protocol: proto, ServiceIPs: ips, Port: uint16(sp.Port), Keep: keep})
			}
			if sp.NodePort != 0 && len(keep) > 0 {
				out = append(out, conntrack.Target{Protocol: proto, NodePort: uint16(sp.NodePort), Keep: keep})
			}
		}
		out = append(out, newlyServedTCP(snap, nn, f)...)
		for _, old := range snap.PreviousPorts[nn] {
			proto, ok := ipProto(old.Protocol)
			if !ok {
				continue
			}
			oldIPs := serviceIPs(old, f)
			sp := current[old.Name]
			var keep map[netip.AddrPort]struct{}
			var kept, gone []netip.Addr
			if sp != nil && sp.Port == old.Port {
				keep = reachable(snap, sp, f)
				newIPs := map[netip.Addr]bool{}
				for _, ip := range serviceIPs(sp, f) {
					newIPs[ip] = true
				}
				for _, ip := range oldIPs {
					if newIPs[ip] {
						kept = append(kept, ip)
					} else {
						gone = append(gone, ip)
					}
				}
			} else {
				gone = oldIPs
			}
			if len(kept) > 0 {
				out = append(out, conntrack.Target{Protocol: proto, ServiceIPs: kept, Port: uint16(old.Port), Keep: keep})
			}
			if len(gone) > 0 {
				out = append(out, conntrack.Target{Protocol: proto, ServiceIPs: gone, Port: uint16(old.Port)})
			}
			if old.NodePort != 0 {
				switch {
				case sp == nil || sp.NodePort != old.NodePort:
					out = append(out, conntrack.Target{Protocol: proto, NodePort: uint16(old.NodePort)})
				case len(keep) > 0:
					// Like upstream, NodePort flows are cleaned only while the Service
					// still has an endpoint to send them to.
					out = append(out, conntrack.Target{Protocol: proto, NodePort: uint16(old.NodePort), Keep: keep})
				}
			}
		}
	}
	return out
}

func ipProto(p v1.Protocol) (uint8, bool) {
	switch p {
	case v1.ProtocolUDP:
		return unix.IPPROTO_UDP, true
	case v1.ProtocolSCTP:
		return unix.IPPROTO_SCTP, true
	}
	return 0, false
}

// serviceIPs are the port's addresses of family f that conntrack entries can name:
// the ClusterIP, externalIPs and LB IPs.
func serviceIPs(sp *model.ServicePort, f model.Family) []netip.Addr {
	var out []netip.Addr
	if ip, ok := sp.ClusterIP(f); ok {
		out = append(out, ip.Unmap())
	}
	out = append(out, model.AddrsOf(sp.ExternalIPs, f)...)
	return append(out, model.AddrsOf(sp.LoadBalancerIPs, f)...)
}

// reachable is the set of endpoints traffic to the port may now be sent to: the
// plan's endpoints, so the cleaner keeps exactly the flows the rules still serve.
func reachable(snap *model.Snapshot, sp *model.ServicePort, f model.Family) map[netip.AddrPort]struct{} {
	plan := model.PlanPort(sp, snap.Endpoints[sp.Name], snap.Node, f)
	keep := make(map[netip.AddrPort]struct{}, len(plan.AllEndpoints))
	for _, e := range plan.AllEndpoints {
		keep[e.AddrPort()] = struct{}{}
	}
	return keep
}

// newlyServedTCP lists, for the TCP ports of a changed Service, the addresses that just
// got rules (a new port or address, or endpoints where there were none): SYNs sent
// there before left entries without DNAT, and since NAT is decided on a connection's
// first packet, a client that reuses such a source port would bypass the Service for
// the 120 s an unanswered SYN's entry lives. Only never-NATed entries are deleted, so
// no connection is touched. Upstream leaves them; UDP and SCTP are covered above.
func newlyServedTCP(snap *model.Snapshot, nn types.NamespacedName, f model.Family) []conntrack.Target {
	previous := map[model.ServicePortName]*model.ServicePort{}
	for _, old := range snap.PreviousPorts[nn] {
		previous[old.Name] = old
	}
	var out []conntrack.Target
	for _, sp := range snap.PortsByService[nn] {
		if sp.Protocol != v1.ProtocolTCP || len(reachable(snap, sp, f)) == 0 {
			continue
		}
		served := map[netip.Addr]bool{}
		if old := previous[sp.Name]; old != nil && old.Port == sp.Port && len(model.EndpointsOf(snap.PreviousEndpoints[sp.Name], f)) > 0 {
			for _, ip := range serviceIPs(old, f) {
				served[ip] = true
			}
		}
		var fresh []netip.Addr
		for _, ip := range serviceIPs(sp, f) {
			if !served[ip] {
				fresh = append(fresh, ip)
			}
		}
		if len(fresh) > 0 {
			out = append(out, conntrack.Target{Protocol: unix.IPPROTO_TCP, ServiceIPs: fresh, Port: uint16(sp.Port), UnNATedOnly: true})
		}
	}
	return out
}
