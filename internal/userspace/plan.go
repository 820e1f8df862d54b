package userspace

import (
	"net/netip"
	"sort"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// listenerKey is one socket kproxy listens on. A wildcard NodePort listener has the
// family's unspecified address.
type listenerKey struct {
	proto v1.Protocol
	addr  netip.AddrPort
}

func (k listenerKey) String() string { return string(k.proto) + "/" + k.addr.String() }

// listenerSpec says what a listener serves: which ServicePort's balancer it draws
// from and which traffic policy applies to its clients.
type listenerSpec struct {
	service model.ServicePortName
	// external is true for NodePorts, externalIPs and LoadBalancer IPs, where
	// externalTrafficPolicy applies; ClusterIP listeners use internalTrafficPolicy.
	external bool
	// internalLocal and externalLocal say the policy's set is the Local one
	// (model.Target.Local); shortCircuit sends pods and the node to the Cluster set
	// on external listeners (model.PortPlan.ShortCircuit).
	internalLocal, externalLocal, shortCircuit bool
	// firewall, on LoadBalancer IP listeners, holds the plan when its source ranges
	// restrict the clients (model.PortPlan.Admits); nil admits everyone.
	firewall *model.PortPlan
}

// endpointSets is a balancer's desired content.
type endpointSets struct {
	cluster, local []netip.AddrPort
	sticky         time.Duration
}

// plan is the state one family's snapshot asks for.
type plan struct {
	// addrs are the Service addresses that must be local to the node (held on the
	// kproxy interface), whether or not their Service has endpoints: traffic to a
	// Service without endpoints must meet a closed port, not leave the node.
	addrs map[netip.Addr]struct{}
	// listeners exist only for ServicePorts with at least one usable endpoint.
	listeners map[listenerKey]listenerSpec
	balancers map[model.ServicePortName]endpointSets
}

// nodePortTargets is where NodePorts listen: all addresses (one wildcard socket) or
// the listed ones.
type nodePortTargets struct {
	all   bool
	addrs []netip.Addr
}

// makePlan computes the listeners, addresses and endpoint sets of family f. Services
// are visited in name order so that, when two claim the same address and port, the
// same one wins every time.
func makePlan(snap *model.Snapshot, f model.Family, np nodePortTargets) *plan {
	p := &plan{
		addrs:     map[netip.Addr]struct{}{},
		listeners: map[listenerKey]listenerSpec{},
		balancers: map[model.ServicePortName]endpointSets{},
	}
	names := make([]model.ServicePortName, 0, len(snap.Services))
	for name := range snap.Services {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		return names[i].String()+string(names[i].Protocol) < names[j].String()+string(names[j].Protocol)
	})
	owner := map[listenerKey]model.ServicePortName{}
	for _, name := range names {
		sp := snap.Services[name]
		plan := model.PlanPort(sp, snap.Endpoints[name], snap.Node, f)
		if !plan.ClusterIP.IsValid() {
			continue
		}
		p.addrs[plan.ClusterIP] = struct{}{}
		for _, ip := range append(append([]netip.Addr(nil), plan.ExternalIPs...), plan.LBIPs...) {
			p.addrs[ip] = struct{}{}
		}
		if sp.Protocol != v1.ProtocolTCP && sp.Protocol != v1.ProtocolUDP {
			klog.V(4).InfoS("Userspace mode relays only TCP and UDP; skipping", "servicePort", name)
			continue
		}
		if plan.Internal.Verdict == model.Reject {
			continue // no listener: the kernel refuses (RST, ICMP port unreachable)
		}
		p.balancers[name] = endpointSets{
			cluster: addrPorts(plan.ClusterEndpoints),
			local:   addrPorts(plan.LocalEndpoints),
			sticky:  plan.Affinity,
		}
		spec := listenerSpec{service: name, internalLocal: plan.Internal.Local, externalLocal: plan.External.Local, shortCircuit: plan.ShortCircuit}
		add := func(addr netip.Addr, port int32, s listenerSpec) {
			k := listenerKey{proto: sp.Protocol, addr: netip.AddrPortFrom(addr, uint16(port))}
			if prev, taken := owner[k]; taken {
				klog.ErrorS(nil, "Address and port claimed twice; the first Service keeps it", "listener", k, "kept", prev, "skipped", name)
				return
			}
			owner[k] = name
			p.listeners[k] = s
		}
		add(plan.ClusterIP, sp.Port, spec)
		ext := spec
		ext.external = true
		for _, ip := range plan.ExternalIPs {
			add(ip, sp.Port, ext)
		}
		lb := ext
		if plan.Firewalled {
			lb.firewall = &plan
		}
		for _, ip := range plan.LBIPs {
			add(ip, sp.Port, lb)
		}
		if sp.NodePort != 0 {
			if np.all {
				add(unspecified(f), sp.NodePort, ext)
			}
			for _, ip := range model.AddrsOf(np.addrs, f) {
				add(ip, sp.NodePort, ext)
			}
		}
	}
	return p
}

func unspecified(f model.Family) netip.Addr {
	if f == model.IPv6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

func addrPorts(eps []*model.Endpoint) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(eps))
	for _, e := range eps {
		out = append(out, e.AddrPort())
	}
	return out
}
