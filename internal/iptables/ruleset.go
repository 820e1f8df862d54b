package iptables

import (
	"bytes"
	"sort"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/model"
)

// BuildInput is everything one sync's ruleset depends on.
type BuildInput struct {
	Params   Params
	Snapshot *model.Snapshot
	// Full writes every per-service chain; otherwise only those of Snapshot.Changed
	// Services are written, and the kernel keeps the others (upstream's partial sync).
	Full bool
	// PreviousChains are the per-service nat chains the last successful sync left in the
	// kernel (on a full sync: what iptables-save shows); chains no longer used are deleted.
	PreviousChains map[string]struct{}
}

// Ruleset is the iptables-restore input of one sync and what it leaves behind.
type Ruleset struct {
	// Data is the restore input for the filter and nat tables, for --noflush.
	Data []byte
	// ActiveChains are the per-service nat chains that exist after the restore.
	ActiveChains map[string]struct{}
	FilterRules  int
	NatRules     int
	// NoLocalEndpoints counts ports whose Local policy has no local endpoint, by
	// "internal" and "external", for the sync_proxy_rules_no_local_endpoints_total metric.
	NoLocalEndpoints map[string]int
}

// Build computes the ruleset. It is pure: it reads its input and touches no kernel.
func Build(in BuildInput) *Ruleset {
	b := &builder{
		p:        &in.Params,
		snap:     in.Snapshot,
		full:     in.Full,
		active:   map[string]struct{}{},
		noLocal:  map[string]int{},
		markMasq: []string{"-j", chainMarkMasq},
	}
	b.writeFixedChains()
	// Iterate in a stable order so the restore input (and its tests) are deterministic.
	names := make([]model.ServicePortName, 0, len(in.Snapshot.Services))
	for name, sp := range in.Snapshot.Services {
		if _, ok := sp.ClusterIP(in.Params.Family); ok {
			names = append(names, name)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		return names[i].String()+string(names[i].Protocol) < names[j].String()+string(names[j].Protocol)
	})
	for _, name := range names {
		b.writeServicePort(in.Snapshot.Services[name])
	}
	b.writeNodePortsJump()

	// Chains that existed before and are no longer used are flushed and deleted.
	var stale []string
	for c := range in.PreviousChains {
		if _, ok := b.active[c]; !ok && isServiceChain(c) {
			stale = append(stale, c)
		}
	}
	sort.Strings(stale)
	for _, c := range stale {
		b.natChains.chain(c)
	}

	var out bytes.Buffer
	out.WriteString("*filter\n")
	out.Write(b.filterChains.buf.Bytes())
	out.Write(b.filterRules.buf.Bytes())
	out.WriteString("COMMIT\n*nat\n")
	out.Write(b.natChains.buf.Bytes())
	out.Write(b.natRules.buf.Bytes())
	for _, c := range stale {
		out.WriteString("-X " + c + "\n")
	}
	out.WriteString("COMMIT\n")
	return &Ruleset{
		Data:             out.Bytes(),
		ActiveChains:     b.active,
		FilterRules:      b.filterRules.rules,
		NatRules:         b.natRules.rules,
		NoLocalEndpoints: b.noLocal,
	}
}

type builder struct {
	p    *Params
	snap *model.Snapshot
	full bool

	filterChains, filterRules lines
	natChains, natRules       lines
	// svcRules collects the nat KUBE-SERVICES rules; KUBE-NODEPORTS' jump goes last.
	active   map[string]struct{}
	noLocal  map[string]int
	markMasq []string
}

// writeFixedChains writes the chains every sync rewrites in full, with their fixed rules.
func (b *builder) writeFixedChains() {
	for _, c := range []string{chainServices, chainExternalServices, chainForward, chainNodePorts, chainProxyFirewall} {
		b.filterChains.chain(c)
	}
	if b.localhostNodePorts() {
		b.filterChains.chain(chainFirewall)
		b.filterRules.rule(join([]string{"-A", chainFirewall}, comment("block incoming localnet connections"),
			[]string{"-d", "127.0.0.0/8", "!", "-s", "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP"})...)
	}
	if b.p.DropInvalid {
		b.filterRules.rule("-A", chainForward, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
	}
	mark := b.p.masqMark()
	b.filterRules.rule(join([]string{"-A", chainForward}, comment("kubernetes forwarding rules"), []string{"-m", "mark", "--mark", mark + "/" + mark, "-j", "ACCEPT"})...)
	b.filterRules.rule(join([]string{"-A", chainForward}, comment("kubernetes forwarding conntrack rule"), []string{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"})...)

	for _, c := range []string{chainServices, chainNodePorts, chainPostrouting, chainMarkMasq} {
		b.natChains.chain(c)
	}
	b.natRules.rule("-A", chainPostrouting, "-m", "mark", "!", "--mark", mark+"/"+mark, "-j", "RETURN")
	b.natRules.rule("-A", chainPostrouting, "-j", "MARK", "--xor-mark", mark)
	b.natRules.rule(join([]string{"-A", chainPostrouting}, comment("kubernetes service traffic requiring SNAT"), []string{"-j", "MASQUERADE", "--random-fully"})...)
	b.natRules.rule("-A", chainMarkMasq, "-j", "MARK", "--or-mark", mark)
}

func (b *builder) localhostNodePorts() bool {
	return b.p.Family == model.IPv4 && b.p.LocalhostNodePorts
}

// writeNodePortsJump writes the last rule of nat KUBE-SERVICES, which must stay last.
func (b *builder) writeNodePortsJump() {
	c := comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
	if b.p.NodePortAll {
		args := join([]string{"-A", chainServices}, c, []string{"-m", "addrtype", "--dst-type", "LOCAL"})
		if b.p.Family == model.IPv4 && !b.p.LocalhostNodePorts {
			args = append(args, "!", "-d", "127.0.0.0/8")
		}
		if b.p.Family == model.IPv6 {
			args = append(args, "!", "-d", "::1/128")
		}
		b.natRules.rule(append(args, "-j", chainNodePorts)...)
		return
	}
	for _, ip := range b.p.NodePortIPs {
		if model.FamilyOf(ip) != b.p.Family || (ip.IsLoopback() && !b.localhostNodePorts()) {
			continue
		}
		b.natRules.rule(join([]string{"-A", chainServices}, c, []string{"-d", ip.String(), "-j", chainNodePorts})...)
	}
}

// changed reports whether the per-service chains of a Service must be written.
func (b *builder) changed(nn types.NamespacedName) bool {
	if b.full {
		return true
	}
	_, ok := b.snap.Changed[nn]
	return ok
}
