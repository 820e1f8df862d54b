package iptables

import (
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/nfacct"
)

// writeFixedChains declares the chains a full sync rewrites and writes their fixed
// rules (the per-port rules of the filter chains and KUBE-NODEPORTS follow).
func writeFixedChains(p *Params, filterChains, filterRules, natChains, natRules *lines) {
	for _, c := range []string{chainServices, chainExternalServices, chainForward, chainNodePorts, chainProxyFirewall} {
		filterChains.chain(c)
	}
	if localhostNodePorts(p) {
		filterChains.chain(chainFirewall)
		filterRules.rule(join([]string{"-A", chainFirewall}, comment("block incoming localnet connections"),
			[]string{"-d", "127.0.0.0/8", "!", "-s", "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP"})...)
	}
	if p.DropInvalid {
		filterRules.rule(join([]string{"-A", chainForward, "-m", "conntrack", "--ctstate", "INVALID"},
			p.count(nfacct.CTStateInvalidDropped), []string{"-j", "DROP"})...)
	}
	mark := p.masqMark()
	filterRules.rule(join([]string{"-A", chainForward}, comment("kubernetes forwarding rules"), []string{"-m", "mark", "--mark", mark + "/" + mark, "-j", "ACCEPT"})...)
	filterRules.rule(join([]string{"-A", chainForward}, comment("kubernetes forwarding conntrack rule"), []string{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"})...)

	for _, c := range []string{chainServices, chainNodePorts, chainPostrouting, chainMarkMasq} {
		natChains.chain(c)
	}
	natRules.rule("-A", chainPostrouting, "-m", "mark", "!", "--mark", mark+"/"+mark, "-j", "RETURN")
	natRules.rule("-A", chainPostrouting, "-j", "MARK", "--xor-mark", mark)
	natRules.rule(join([]string{"-A", chainPostrouting}, comment("kubernetes service traffic requiring SNAT"), []string{"-j", "MASQUERADE", "--random-fully"})...)
	natRules.rule("-A", chainMarkMasq, "-j", "MARK", "--or-mark", mark)
}

func localhostNodePorts(p *Params) bool {
	return p.Family == model.IPv4 && p.LocalhostNodePorts
}

// writeNodePortsJump writes the last rule of nat KUBE-SERVICES, which must stay last.
func writeNodePortsJump(p *Params, natRules *lines) {
	c := comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
	if p.NodePortAll {
		args := join([]string{"-A", chainServices}, c, []string{"-m", "addrtype", "--dst-type", "LOCAL"})
		if p.Family == model.IPv4 && !p.LocalhostNodePorts {
			args = append(args, "!", "-d", "127.0.0.0/8")
		}
		if p.Family == model.IPv6 {
			args = append(args, "!", "-d", "::1/128")
		}
		natRules.rule(append(args, "-j", chainNodePorts)...)
		return
	}
	for _, ip := range p.NodePortIPs {
		if model.FamilyOf(ip) != p.Family || (ip.IsLoopback() && !localhostNodePorts(p)) {
			continue
		}
		natRules.rule(join([]string{"-A", chainServices}, c, []string{"-d", ip.String(), "-j", chainNodePorts})...)
	}
}

// count is the match that counts a rule's packets in the nfacct object name, when
// the node counts with nfacct.
func (p *Params) count(name string) []string {
	if !p.NFAcct {
		return nil
	}
	return []string{"-m", "nfacct", "--nfacct-name", name}
}
