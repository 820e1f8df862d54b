package iptables

import (
	"fmt"
	"strconv"

	"github.com/kproxy/kproxy/internal/model"
)

// writeServicePort writes one ServicePort's rules: its entries in the fixed chains
// (always), and its own SVC/SVL/EXT/FW/SEP chains (when the Service changed or the
// sync is full). The decisions follow upstream kube-proxy's iptables proxier.
func (b *builder) writeServicePort(sp *model.ServicePort) {
	fam := b.p.Family
	clusterIP, _ := sp.ClusterIP(fam)
	name := sp.Name.String()
	proto := sp.ProtocolLower()
	protoArgs := []string{"-m", proto, "-p", proto}
	chains := chainsFor(sp)

	sets := model.CategorizeEndpoints(familyEndpoints(b.snap.Endpoints[sp.Name], fam), sp, b.snap.Node)
	usesCluster := len(sets.Cluster) > 0 && sp.UsesClusterEndpoints()
	usesLocal := len(sets.Local) > 0 && sp.UsesLocalEndpoints()
	clusterChain, localChain := "", ""
	if usesCluster {
		clusterChain = chains.svc
	}
	if usesLocal {
		localChain = chains.svl
	}

	hasEndpoints := sets.HasAny
	internalChain, hasInternal := clusterChain, hasEndpoints
	if sp.InternalPolicyLocal {
		internalChain = localChain
		hasInternal = hasInternal && len(sets.Local) > 0
	}
	externalPolicyChain, hasExternal := clusterChain, hasEndpoints
	if sp.ExternalPolicyLocal {
		externalPolicyChain = localChain
		hasExternal = hasExternal && len(sets.Local) > 0
	}
	externalIPs := familyAddrs(sp.ExternalIPs, fam)
	lbIPs := familyAddrs(sp.LoadBalancerIPs, fam)
	ranges := familyPrefixes(sp.LoadBalancerSourceRanges, fam)
	externallyAccessible := sp.NodePort != 0 || len(externalIPs) > 0 || len(lbIPs) > 0
	usesExternalChain := hasEndpoints && externallyAccessible
	usesFW := hasEndpoints && len(lbIPs) > 0 && len(ranges) > 0 && !allowsAll(ranges)
	lbChain := chains.ext
	if usesFW {
		lbChain = chains.fw
	}

	// What the filter table does with traffic that finds no usable endpoint.
	var internalFilter, externalFilter []string
	if !hasEndpoints {
		internalFilter = join(comment(name+" has no endpoints"), []string{"-j", "REJECT"})
		externalFilter = internalFilter
	} else {
		if !hasInternal {
			internalFilter = join(comment(name+" has no local endpoints"), []string{"-j", "DROP"})
			b.noLocal["internal"]++
		}
		if !hasExternal {
			externalFilter = join(comment(name+" has no local endpoints"), []string{"-j", "DROP"})
			b.noLocal["external"]++
		}
	}
	dport := []string{"--dport", strconv.Itoa(int(sp.Port))}

	// The ClusterIP.
	if hasInternal {
		b.natRules.rule(join([]string{"-A", chainServices}, comment(name+" cluster IP"), protoArgs,
			[]string{"-d", clusterIP.String()}, dport, []string{"-j", internalChain})...)
	} else {
		b.filterRules.rule(join([]string{"-A", chainServices}, internalFilter[:4], protoArgs,
			[]string{"-d", clusterIP.String()}, dport, internalFilter[4:])...)
	}
	// externalIPs.
	for _, ip := range externalIPs {
		if hasEndpoints {
			b.natRules.rule(join([]string{"-A", chainServices}, comment(name+" external IP"), protoArgs,
				[]string{"-d", ip.String()}, dport, []string{"-j", chains.ext})...)
		}
		if !hasExternal {
			b.filterRules.rule(join([]string{"-A", chainExternalServices}, externalFilter[:4], protoArgs,
				[]string{"-d", ip.String()}, dport, externalFilter[4:])...)
		}
	}
	// LoadBalancer ingress IPs.
	for _, ip := range lbIPs {
		if hasEndpoints {
			b.natRules.rule(join([]string{"-A", chainServices}, comment(name+" loadbalancer IP"), protoArgs,
				[]string{"-d", ip.String()}, dport, []string{"-j", lbChain})...)
		}
		if usesFW {
			b.filterRules.rule(join([]string{"-A", chainProxyFirewall}, comment(fmt.Sprintf("%s traffic not accepted by %s", name, chains.fw)),
				protoArgs, []string{"-d", ip.String()}, dport, []string{"-j", "DROP"})...)
		}
		if !hasExternal {
			b.filterRules.rule(join([]string{"-A", chainExternalServices}, externalFilter[:4], protoArgs,
				[]string{"-d", ip.String()}, dport, externalFilter[4:])...)
		}
	}
	// The NodePort.
	if sp.NodePort != 0 {
		np := []string{"--dport", strconv.Itoa(int(sp.NodePort))}
		if hasEndpoints {
			b.natRules.rule(join([]string{"-A", chainNodePorts}, comment(name), protoArgs, np, []string{"-j", chains.ext})...)
		}
		if !hasExternal {
			b.filterRules.rule(join([]string{"-A", chainExternalServices}, externalFilter[:4],
				[]string{"-m", "addrtype", "--dst-type", "LOCAL"}, protoArgs, np, externalFilter[4:])...)
		}
	}
	// The health check node port is accepted whether or not there are local endpoints.
	if sp.HealthCheckNodePort != 0 {
		b.filterRules.rule(join([]string{"-A", chainNodePorts}, comment(name+" health check node port"),
			[]string{"-m", "tcp", "-p", "tcp", "--dport", strconv.Itoa(int(sp.HealthCheckNodePort)), "-j", "ACCEPT"})...)
	}

	// The per-service chains. For an unchanged Service in a partial sync they are
	// computed into a scratch buffer and dropped: the kernel still holds them.
	natChains, natRules := &b.natChains, &b.natRules
	if !b.changed(sp.Name.NamespacedName) {
		natChains, natRules = &lines{}, &lines{}
	}
	activate := func(c string) {
		natChains.chain(c)
		b.active[c] = struct{}{}
	}

	if hasInternal {
		args := join([]string{"-A", internalChain}, comment(name+" cluster IP"), protoArgs, []string{"-d", clusterIP.String()}, dport)
		if b.p.MasqueradeAll {
			natRules.rule(append(args, b.markMasq...)...)
		} else if b.p.LocalDetector.Implemented() {
			natRules.rule(join(args, b.p.LocalDetector.ifNotLocal, b.markMasq)...)
		}
	}

	if usesExternalChain {
		activate(chains.ext)
		ext := []string{"-A", chains.ext}
		if !sp.ExternalPolicyLocal {
			natRules.rule(join(ext, comment("masquerade traffic for "+name+" external destinations"), b.markMasq)...)
		} else {
			// Pod traffic to an external destination is not subject to the traffic
			// policy (as if it went out to the load balancer and came back in).
			if b.p.LocalDetector.Implemented() && clusterChain != "" {
				natRules.rule(join(ext, comment("pod traffic for "+name+" external destinations"), b.p.LocalDetector.ifLocal, []string{"-j", clusterChain})...)
			}
			// Traffic from the node itself must be masqueraded: its source would be
			// the external IP itself.
			natRules.rule(join(ext, comment("masquerade LOCAL traffic for "+name+" external destinations"),
				[]string{"-m", "addrtype", "--src-type", "LOCAL"}, b.markMasq)...)
			if clusterChain != "" {
				natRules.rule(join(ext, comment("route LOCAL traffic for "+name+" external destinations"),
					[]string{"-m", "addrtype", "--src-type", "LOCAL", "-j", clusterChain})...)
			}
		}
		if hasExternal {
			natRules.rule(join(ext, []string{"-j", externalPolicyChain})...)
		}
	}

	if usesFW {
		activate(chains.fw)
		fw := join([]string{"-A", chains.fw}, comment(name+" loadbalancer IP"))
		allowFromNode := false
		for _, r := range ranges {
			natRules.rule(join(fw, []string{"-s", r.String(), "-j", chains.ext})...)
			for _, nip := range b.p.NodeIPs {
				allowFromNode = allowFromNode || r.Contains(nip)
			}
		}
		// A node reaching its own LB VIP loops back with the VIP as source.
		if allowFromNode {
			for _, ip := range lbIPs {
				natRules.rule(join(fw, []string{"-s", ip.String(), "-j", chains.ext})...)
			}
		}
		natRules.rule(join([]string{"-A", chains.fw}, comment("other traffic to "+name+" will be dropped by KUBE-PROXY-FIREWALL"))...)
	}

	if usesCluster {
		activate(clusterChain)
		b.writeEndpointJumps(natRules, sp, clusterChain, sets.Cluster)
	}
	if usesLocal {
		activate(localChain)
		b.writeEndpointJumps(natRules, sp, localChain, sets.Local)
	}
	for _, ep := range sets.AllReachable {
		sep := endpointChain(sp, ep)
		activate(sep)
		args := join([]string{"-A", sep}, comment(name))
		// Hairpin: a pod that reaches itself through the Service must see another
		// source, or its reply would not go back through the DNAT.
		natRules.rule(join(args, []string{"-s", ep.IP.String()}, b.markMasq)...)
		if sp.StickyMaxAgeSeconds > 0 {
			args = append(args, "-m", "recent", "--name", sep, "--set")
		}
		natRules.rule(join(args, protoArgs, []string{"-j", "DNAT", "--to-destination", ep.String()})...)
	}
}

// writeEndpointJumps writes a SVC or SVL chain: affinity checks first, then one
// statistic rule per endpoint so each gets an equal share; the last is unconditional.
func (b *builder) writeEndpointJumps(natRules *lines, sp *model.ServicePort, chain string, eps []*model.Endpoint) {
	name := sp.Name.String()
	if sp.StickyMaxAgeSeconds > 0 {
		for _, ep := range eps {
			sep := endpointChain(sp, ep)
			natRules.rule(join([]string{"-A", chain}, comment(name+" -> "+ep.String()),
				[]string{"-m", "recent", "--name", sep, "--rcheck", "--seconds", strconv.Itoa(sp.StickyMaxAgeSeconds), "--reap", "-j", sep})...)
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
