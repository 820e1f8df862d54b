package iptables

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/nfacct"
)

// filterChain indexes the filter chains ServicePorts put rules in.
type filterChain int

const (
	filterServices filterChain = iota
	filterExternalServices
	filterNodePorts
	filterProxyFirewall
	numFilterChains
)

var filterChainNames = [numFilterChains]string{chainServices, chainExternalServices, chainNodePorts, chainProxyFirewall}

// addrRule is a nat rule that matches one destination address; it lives in the
// dispatch chain of that address (see dispatch.go).
type addrRule struct {
	addr netip.Addr
	rule string // the rule after "-A <chain> "
}

// fragment is everything one ServicePort contributes to the ruleset. Fragments are
// cached between syncs and recomputed only for the Services that changed, so a sync
// costs work in proportion to what changed, not to all Services.
type fragment struct {
	dispatch  []addrRule
	nodePorts []string // nat KUBE-NODEPORTS rules, after "-A KUBE-NODEPORTS "
	filter    [numFilterChains][]string
	// chains holds the rules of the port's own nat chains (SVC, SVL, EXT, FW, SEP) in
	// restore syntax until they are written; chainNames lists those chains, which the
	// restore declares. Once written, seal drops the text and keeps a hash of each
	// chain's rules (chainSums, parallel to chainNames): enough for the next partial
	// sync to tell which chains changed, at a few bytes instead of kilobytes per port.
	chains     []byte
	chainNames []string
	chainSums  []uint64
	ownRules   int // rules in chains
	// noLocal counts, for the metric, Local policies without local endpoints.
	noLocalInternal, noLocalExternal bool
}

// rulesByChain splits the fragment's own rules by chain; every chain in chainNames
// has an entry, if only an empty one.
func (f *fragment) rulesByChain() map[string][]byte {
	out := make(map[string][]byte, len(f.chainNames))
	for _, c := range f.chainNames {
		out[c] = nil
	}
	for line := range bytes.Lines(f.chains) {
		// "-A <chain> ...": appending keeps each chain's rules in order.
		if fields := bytes.SplitN(line, []byte(" "), 3); len(fields) >= 2 {
			c := string(fields[1])
			out[c] = append(out[c], line...)
		}
	}
	return out
}

// sumSeed keys the chain hashes; they are only compared within one process.
var sumSeed = maphash.MakeSeed()

// seal replaces the rules text by one hash per chain (see fragment.chains) and
// returns the text split by chain, for a caller that writes some of it.
func (f *fragment) seal() map[string][]byte {
	byChain := f.rulesByChain()
	f.chainSums = make([]uint64, len(f.chainNames))
	for i, c := range f.chainNames {
		f.chainSums[i] = maphash.Bytes(sumSeed, byChain[c])
	}
	f.chains = nil
	return byChain
}

func (f *fragment) hasFilterRules() bool {
	for _, rules := range f.filter {
		if len(rules) > 0 {
			return true
		}
	}
	return false
}

// words renders rule words as restore text (quoting is done by comment()).
func words(ws ...[]string) string { return strings.Join(join(ws...), " ") }

// buildFragment computes one ServicePort's rules. The decisions are the plan's
// (model.PlanPort); this only spells them in iptables.
func buildFragment(p *Params, sp *model.ServicePort, eps []*model.Endpoint, node *model.Node, markMasq []string) *fragment {
	plan := model.PlanPort(sp, eps, node, p.Family)
	f := &fragment{}
	name := sp.Name.String()
	proto := sp.ProtocolLower()
	protoArgs := []string{"-m", proto, "-p", proto}
	chains := chainsFor(sp)
	clusterChain, localChain := "", ""
	if len(plan.ClusterEndpoints) > 0 {
		clusterChain = chains.svc
	}
	if len(plan.LocalEndpoints) > 0 {
		localChain = chains.svl
	}
	// policyChain is the chain that spreads a target's traffic over its endpoints.
	policyChain := func(t model.Target) string {
		if t.Local {
			return localChain
		}
		return clusterChain
	}
	internalChain, externalPolicyChain := policyChain(plan.Internal), policyChain(plan.External)
	// The firewall chain exists only with endpoints: without, the filter table rejects.
	usesFW := plan.Firewalled && plan.External.Verdict != model.Reject
	lbChain := chains.ext
	if usesFW {
		lbChain = chains.fw
	}

	// What the filter table does with traffic that finds no usable endpoint.
	filterRule := func(t model.Target) []string {
		switch t.Verdict {
		case model.Reject:
			return join(comment(name+" has no endpoints"), []string{"-j", "REJECT"})
		case model.Drop:
			return join(comment(name+" has no local endpoints"), []string{"-j", "DROP"})
		}
		return nil
	}
	internalFilter, externalFilter := filterRule(plan.Internal), filterRule(plan.External)
	f.noLocalInternal, f.noLocalExternal = plan.Internal.NoLocalEndpoints(), plan.External.NoLocalEndpoints()
	// The external addresses exist (are dispatched to the external stage) whenever the
	// Service has endpoints at all: the stage's short-circuits may still apply.
	externalExists := plan.External.Verdict != model.Reject
	dport := []string{"--dport", strconv.Itoa(int(sp.Port))}
	dst := func(a netip.Addr) []string { return []string{"-d", a.String()} }
	addFilter := func(c filterChain, rule string) { f.filter[c] = append(f.filter[c], rule) }
	addDispatch := func(a netip.Addr, rule string) { f.dispatch = append(f.dispatch, addrRule{addr: a, rule: rule}) }

	// The ClusterIP.
	if plan.Internal.Verdict == model.Forward {
		addDispatch(plan.ClusterIP, words(comment(name+" cluster IP"), protoArgs, dst(plan.ClusterIP), dport, []string{"-j", internalChain}))
	} else {
		addFilter(filterServices, words(internalFilter[:4], protoArgs, dst(plan.ClusterIP), dport, internalFilter[4:]))
	}
	// externalIPs.
	for _, ip := range plan.ExternalIPs {
		if externalExists {
			addDispatch(ip, words(comment(name+" external IP"), protoArgs, dst(ip), dport, []string{"-j", chains.ext}))
		}
		if externalFilter != nil {
			addFilter(filterExternalServices, words(externalFilter[:4], protoArgs, dst(ip), dport, externalFilter[4:]))
		}
	}
	// LoadBalancer ingress IPs.
	for _, ip := range plan.LBIPs {
		if externalExists {
			addDispatch(ip, words(comment(name+" loadbalancer IP"), protoArgs, dst(ip), dport, []string{"-j", lbChain}))
		}
		if usesFW {
			addFilter(filterProxyFirewall, words(comment(fmt.Sprintf("%s traffic not accepted by %s", name, chains.fw)),
				protoArgs, dst(ip), dport, []string{"-j", "DROP"}))
		}
		if externalFilter != nil {
			addFilter(filterExternalServices, words(externalFilter[:4], protoArgs, dst(ip), dport, externalFilter[4:]))
		}
	}
	// The NodePort.
	if sp.NodePort != 0 {
		np := []string{"--dport", strconv.Itoa(int(sp.NodePort))}
		if externalExists {
			if localhostNodePorts(p) && p.NFAcct {
				// Upstream's rule that only counts: the same jump for 127.0.0.0/8.
				f.nodePorts = append(f.nodePorts, words(comment(name), protoArgs, []string{"-d", "127.0.0.0/8"}, np,
					p.count(nfacct.LocalhostNodePortsAccepted), []string{"-j", chains.ext}))
			}
			f.nodePorts = append(f.nodePorts, words(comment(name), protoArgs, np, []string{"-j", chains.ext}))
		}
		if externalFilter != nil {
			addFilter(filterExternalServices, words(externalFilter[:4], []string{"-m", "addrtype", "--dst-type", "LOCAL"}, protoArgs, np, externalFilter[4:]))
		}
	}
	// The health check node port is accepted whether or not there are local endpoints.
	if plan.HealthCheckNodePort != 0 {
		addFilter(filterNodePorts, words(comment(name+" health check node port"),
			[]string{"-m", "tcp", "-p", "tcp", "--dport", strconv.Itoa(int(plan.HealthCheckNodePort)), "-j", "ACCEPT"}))
	}

	// The port's own chains.
	var ownRules lines
	activate := func(c string) {
		f.chainNames = append(f.chainNames, c)
	}
	if plan.Internal.Verdict == model.Forward {
		args := join([]string{"-A", internalChain}, comment(name+" cluster IP"), protoArgs, dst(plan.ClusterIP), dport)
		if p.MasqueradeAll {
			ownRules.rule(append(args, markMasq...)...)
		} else if p.LocalDetector.Implemented() {
			ownRules.rule(join(args, p.LocalDetector.ifNotLocal, markMasq)...)
		}
	}
	if plan.ExternalDispatch {
		activate(chains.ext)
		ext := []string{"-A", chains.ext}
		if plan.MasqueradeExternal {
			ownRules.rule(join(ext, comment("masquerade traffic for "+name+" external destinations"), markMasq)...)
		} else {
			// Pod traffic to an external destination is not subject to the traffic
			// policy (as if it went out to the load balancer and came back in).
			if p.LocalDetector.Implemented() && plan.ShortCircuit {
				ownRules.rule(join(ext, comment("pod traffic for "+name+" external destinations"), p.LocalDetector.ifLocal, []string{"-j", clusterChain})...)
			}
			// Traffic from the node itself must be masqueraded: its source would be
			// the external IP itself.
			ownRules.rule(join(ext, comment("masquerade LOCAL traffic for "+name+" external destinations"),
				[]string{"-m", "addrtype", "--src-type", "LOCAL"}, markMasq)...)
			if plan.ShortCircuit {
				ownRules.rule(join(ext, comment("route LOCAL traffic for "+name+" external destinations"),
					[]string{"-m", "addrtype", "--src-type", "LOCAL", "-j", clusterChain})...)
			}
		}
		if plan.External.Verdict == model.Forward {
			ownRules.rule(join(ext, []string{"-j", externalPolicyChain})...)
		}
	}
	if usesFW {
		activate(chains.fw)
		fw := join([]string{"-A", chains.fw}, comment(name+" loadbalancer IP"))
		for _, r := range plan.SourceRanges {
			ownRules.rule(join(fw, []string{"-s", r.String(), "-j", chains.ext})...)
		}
		for _, ip := range plan.SourceLBIPs {
			ownRules.rule(join(fw, []string{"-s", ip.String(), "-j", chains.ext})...)
		}
		ownRules.rule(join([]string{"-A", chains.fw}, comment("other traffic to "+name+" will be dropped by KUBE-PROXY-FIREWALL"))...)
	}
	if clusterChain != "" {
		activate(clusterChain)
		writeEndpointJumps(&ownRules, sp, plan.Affinity, clusterChain, plan.ClusterEndpoints)
	}
	if localChain != "" {
		activate(localChain)
		writeEndpointJumps(&ownRules, sp, plan.Affinity, localChain, plan.LocalEndpoints)
	}
	for _, ep := range plan.AllEndpoints {
		sep := endpointChain(sp, ep)
		activate(sep)
		args := join([]string{"-A", sep}, comment(name))
		// Hairpin: a pod that reaches itself through the Service must see another
		// source, or its reply would not go back through the DNAT.
		ownRules.rule(join(args, []string{"-s", ep.IP.String()}, markMasq)...)
		if plan.Affinity > 0 {
			args = append(args, "-m", "recent", "--name", sep, "--set")
		}
		ownRules.rule(join(args, protoArgs, []string{"-j", "DNAT", "--to-destination", ep.String()})...)
	}
	f.chains = ownRules.buf.Bytes()
	f.ownRules = ownRules.rules
	return f
}

// writeEndpointJumps writes a SVC or SVL chain: affinity checks first, then one
// statistic rule per endpoint so each gets an equal share; the last is unconditional.
func writeEndpointJumps(natRules *lines, sp *model.ServicePort, affinity time.Duration, chain string, eps []*model.Endpoint) {
	name := sp.Name.String()
	if affinity > 0 {
		for _, ep := range eps {
			sep := endpointChain(sp, ep)
			natRules.rule(join([]string{"-A", chain}, comment(name+" -> "+ep.String()),
				[]string{"-m", "recent", "--name", sep, "--rcheck", "--seconds", strconv.Itoa(int(affinity.Seconds())), "--reap", "-j", sep})...)
		}
	}
	n := len(eps)
	for i, ep := range eps {
		args := join([]string{"-A", chain}, comment(name+" -> "+ep.String()))
		if i < n-1 {
			args = append(args, "-m", "statistic", "--mode", "random", "--probability", fmt.Sprintf("%0.10f", 1.0/float64(n-i)))
		}
		natRules.rule(append(args, "-j", endpointChain(sp, ep))...)
	}
}
