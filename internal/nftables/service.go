package nftables

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/kproxy/kproxy/internal/model"
)

// portObjectsFor computes what one ServicePort puts into the kernel. The decisions
// (which chains, REJECT or DROP, the external chain's short-circuits, the firewall) are
// upstream kube-proxy's, and the same as the iptables backend's. It returns nil when the
// port has no ClusterIP of the family.
func portObjectsFor(p *Params, sp *model.ServicePort, eps []*model.Endpoint, node *model.Node) *portObjects {
	plan := model.PlanPort(sp, eps, node, p.Family)
	if !plan.ClusterIP.IsValid() {
		return nil
	}
	clusterIP := plan.ClusterIP
	o := &portObjects{name: sp.Name, noLocalInternal: plan.Internal.NoLocalEndpoints(), noLocalExternal: plan.External.NoLocalEndpoints()}
	ip := p.ipKeyword()
	name := sp.Name.String()
	proto := sp.ProtocolLower()
	port := itoa(sp.Port)
	base := portBase(sp)

	clusterChain, localChain := "", ""
	if len(plan.ClusterEndpoints) > 0 {
		clusterChain = prefixService + base
	}
	if len(plan.LocalEndpoints) > 0 {
		localChain = prefixLocal + base
	}
	// policyChain is the chain that spreads a target's traffic over its endpoints.
	policyChain := func(t model.Target) string {
		if t.Local {
			return localChain
		}
		return clusterChain
	}
	internalChain, externalPolicyChain := policyChain(plan.Internal), policyChain(plan.External)
	externalChain := prefixExternal + base
	// Unlike iptables, the firewall filters before DNAT, so it exists even without
	// endpoints: traffic from outside the ranges is dropped, not rejected.
	usesFW := plan.Firewalled
	firewallChain := prefixFirewall + base
	// The external addresses exist (lead to the external chain) whenever the Service
	// has endpoints at all: the chain's short-circuits may still apply.
	externalExists := plan.External.Verdict != model.Reject

	// What happens to traffic that finds no usable endpoint: REJECT when the Service
	// has none at all, DROP when it only lacks local ones.
	verdict := func(t model.Target) string {
		if t.Verdict == model.Reject {
			return "goto " + chainReject
		}
		return "drop"
	}
	internalVerdict, externalVerdict := verdict(plan.Internal), verdict(plan.External)
	hasExternal := plan.External.Verdict == model.Forward
	target := func(addr string) []string { return []string{addr, proto, port} }
	addMap := func(m string, key []string, verdict, comment string) {
		o.elements = append(o.elements, element{container: m, isMap: true, key: key, value: verdict, comment: comment})
	}

	// The ClusterIP. Every port adds it to cluster-ips, so other ports of it are rejected.
	o.elements = append(o.elements, element{container: setClusterIPs, key: []string{clusterIP.String()}})
	if plan.Internal.Verdict == model.Forward {
		addMap(mapServiceIPs, target(clusterIP.String()), "goto "+internalChain, "")
	} else {
		addMap(mapNoEndpointServices, target(clusterIP.String()), internalVerdict, name)
	}
	// externalIPs.
	for _, a := range plan.ExternalIPs {
		if externalExists {
			addMap(mapServiceIPs, target(a.String()), "goto "+externalChain, "")
		}
		if !hasExternal {
			addMap(mapNoEndpointServices, target(a.String()), externalVerdict, name)
		}
	}
	// LoadBalancer ingress IPs.
	for _, a := range plan.LBIPs {
		if externalExists {
			addMap(mapServiceIPs, target(a.String()), "goto "+externalChain, "")
		}
		if usesFW {
			addMap(mapFirewallIPs, target(a.String()), "goto "+firewallChain, "")
		}
		if !hasExternal {
			addMap(mapNoEndpointServices, target(a.String()), externalVerdict, name)
		}
	}
	// The NodePort; NodePorts are not subject to loadBalancerSourceRanges.
	if sp.NodePort != 0 {
		np := []string{proto, itoa(sp.NodePort)}
		if externalExists {
			addMap(mapServiceNodePorts, np, "goto "+externalChain, "")
		}
		if !hasExternal {
			addMap(mapNoEndpointNodePorts, np, externalVerdict, name)
		}
	}

	if usesFW {
		fw := &chain{name: firewallChain}
		sources := make([]string, 0, len(plan.SourceRanges)+len(plan.SourceLBIPs))
		for _, r := range plan.SourceRanges {
			sources = append(sources, r.String())
		}
		for _, a := range plan.SourceLBIPs {
			sources = append(sources, a.String())
		}
		fw.add("", ip, "saddr", "!=", "{", strings.Join(sources, ", "), "}", "drop")
		o.chains = append(o.chains, fw)
	}

	if plan.ExternalDispatch {
		ext := &chain{name: externalChain}
		mark := "mark set mark or " + p.masqMark()
		if plan.MasqueradeExternal {
			ext.add("masquerade", mark)
		} else {
			// Pod traffic to an external destination is not subject to the traffic
			// policy (as if it went out to the load balancer and came back in).
			if p.LocalDetector.Implemented() && plan.ShortCircuit {
				ext.add("short-circuit pod traffic", p.LocalDetector.ifLocal, "goto", clusterChain)
			}
			// Traffic from the node itself must be masqueraded: its source would be
			// the external IP itself.
			ext.add("masquerade local traffic", "fib saddr type local", mark)
			if plan.ShortCircuit {
				ext.add("short-circuit local traffic", "fib saddr type local goto", clusterChain)
			}
		}
		if hasExternal {
			ext.add("", "goto", externalPolicyChain)
		}
		o.chains = append(o.chains, ext)
	}

	affine := plan.Affinity > 0
	for _, d := range []struct {
		chain string
		eps   []*model.Endpoint
	}{{clusterChain, plan.ClusterEndpoints}, {localChain, plan.LocalEndpoints}} {
		if d.chain == "" {
			continue
		}
		c, slots := endpointDispatch(p, sp, affine, d.chain, d.eps)
		o.chains = append(o.chains, c)
		if !affine {
			o.endpointMaps = append(o.endpointMaps, d.chain)
			o.slots = append(o.slots, slots)
		}
	}
	for _, ep := range plan.Hairpin {
		o.elements = append(o.elements, element{container: setHairpinConnections,
			key: []string{ep.IP.Unmap().String(), ep.IP.Unmap().String(), proto, itoa(ep.Port)}})
	}
	// With ClientIP affinity each endpoint has a chain that remembers its clients.
	for _, ep := range plan.AllEndpoints {
		if !affine {
			break
		}
		eb := endpointBase(sp, ep)
		if o.affinity == nil {
			o.affinity = map[string]time.Duration{}
		}
		o.affinity[prefixAffinity+eb] = plan.Affinity
		c := &chain{name: prefixEndpoint + eb}
		c.add("", "update", "@"+prefixAffinity+eb, "{", ip, "saddr", "}")
		c.add("", "meta l4proto", proto, "dnat to", ep.AddrPort().String())
		o.chains = append(o.chains, c)
	}
	return o
}

// endpointSlots is the range "numgen random mod" draws from to pick an endpoint; each
// endpoint owns an interval of it in the dispatch chain's endpoint map. Drawing from a
// constant range keeps the chain's rules the same whatever the endpoints are, so an
// endpoint change is a few map element updates and never rewrites a chain (upstream
// writes the endpoints into the rule, and rewrites the chain). The split is fair to
// within 1/65536.
const endpointSlots = 65536

// endpointDispatch writes a service- or local- chain, which picks one endpoint at random
// with numgen. Without affinity it DNATs through the chain's endpoint map, a named map
// of the same name as the chain, whose elements it returns. With ClientIP affinity it
// first sends known clients to their endpoint's chain, which refreshes the client in the
// endpoint's affinity set, and picks the others through an inline verdict map: those
// chains are rewritten when the endpoints change.
func endpointDispatch(p *Params, sp *model.ServicePort, affine bool, name string, eps []*model.Endpoint) (*chain, []slot) {
	c := &chain{name: name}
	ip, proto := p.ipKeyword(), sp.ProtocolLower()
	if affine {
		targets := make([]string, len(eps))
		for i, ep := range eps {
			eb := endpointBase(sp, ep)
			c.add("", ip, "saddr", "@"+prefixAffinity+eb, "goto", prefixEndpoint+eb)
			targets[i] = fmt.Sprintf("%d : goto %s", i, prefixEndpoint+eb)
		}
		c.add("", "numgen random mod", itoa(len(eps)), "vmap {", strings.Join(targets, " , "), "}")
		return c, nil
	}
	c.add("", "meta l4proto", proto, "dnat", ip, "addr . port to numgen random mod", itoa(endpointSlots), "map", "@"+name)
	// The map covers the whole range, but a map created in a transaction (every map
	// when a restarted kproxy rebuilds the table) is looked up empty between the
	// kernel's generation flip and the set's commit: the packet would go on un-DNATed
	// and cluster-ips-check would reject it (1 connection in ~2,000 across a restart
	// in test/e2e's TestFaultSIGKILLMidSync). Dropped instead, the SYN is resent 1 s
	// later and meets the committed map.
	c.add(mapMissComment, "drop")
	if len(eps) > endpointSlots {
		eps = eps[:endpointSlots]
	}
	n := len(eps)
	slots := make([]slot, n)
	for i, ep := range eps {
		lo, hi := i*endpointSlots/n, (i+1)*endpointSlots/n-1
		slots[i] = slot{lo: uint16(lo), hi: uint16(hi), ep: netip.AddrPortFrom(ep.IP.Unmap(), uint16(ep.Port))}
	}
	return c, slots
}

// mapMissComment marks a dispatch chain's fallback rule, reached only when its
// endpoint map has no element for the drawn value.
const mapMissComment = "endpoint map miss"

// endpointMap is the declaration of a dispatch chain's endpoint map: numgen's value to
// the endpoint's address and port. "th dport" (any transport header) names the port's
// type; "tcp dport" would clash with the rule's "meta l4proto udp" in UDP Services.
func endpointMap(p *Params, name string) *knftables.Map {
	return &knftables.Map{
		Name:   name,
		TypeOf: "numgen random mod " + itoa(endpointSlots) + " : " + p.ipKeyword() + " daddr . th dport",
		Flags:  []knftables.SetFlag{knftables.IntervalFlag},
	}
}
