package ipvs

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"

	"github.com/kproxy/kproxy/internal/model"
)

// RuleParams are the node-wide settings the fixed iptables rules depend on.
type RuleParams struct {
	Family        model.Family
	MasqueradeAll bool
	MasqueradeBit int
	// NotLocal are the iptables match arguments that select traffic not from local
	// pods ("! -s 10.244.0.0/16"); nil when no local-traffic detector is configured.
	NotLocal []string
	// NodePortAll means NodePorts answer on every local address; otherwise on
	// NodePortIPs only.
	NodePortAll bool
	NodePortIPs []netip.Addr
}

// Rules returns the iptables-restore input (for --noflush) of the fixed chains. They
// only match ipsets, so they change with the settings, never with the Services.
func Rules(p RuleParams) []byte {
	f := p.Family
	set := func(base string) string { return setName(f, base) }
	mark := fmt.Sprintf("0x%x", uint32(1)<<p.MasqueradeBit)
	var b strings.Builder
	rule := func(words ...string) {
		b.WriteString(strings.Join(words, " "))
		b.WriteByte('\n')
	}
	match := func(base, dims string) string { return "-m set --match-set " + set(base) + " " + dims }
	comment := func(text string) string { return `-m comment --comment "` + text + `"` }

	b.WriteString("*filter\n")
	for _, c := range filterChains {
		rule(":" + c + " - [0:0]")
	}
	rule("-A", chainProxyFirewall, match(setLoadBalancerFW, "dst,dst"), "-j", chainSourceRangesFirewall)
	rule("-A", chainSourceRangesFirewall, match(setLBSourceCIDR, "dst,dst,src"), "-j RETURN")
	rule("-A", chainSourceRangesFirewall, match(setLBSourceIP, "dst,dst,src"), "-j RETURN")
	rule("-A", chainSourceRangesFirewall, "-j DROP")
	rule("-A", chainForward, comment("kubernetes forwarding rules"), "-m mark --mark "+mark+"/"+mark, "-j ACCEPT")
	rule("-A", chainForward, comment("kubernetes forwarding conntrack rule"), "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
	rule("-A", chainNodePort, comment("Kubernetes health check node port"), match(setHealthCheckNodePort, "dst"), "-j ACCEPT")
	// Addresses on kube-ipvs0 answer only on Service ports: a new connection to any
	// other port would reach a host process (upstream issue 72236).
	for _, s := range []string{setLoadBalancer, setClusterIP, setExternalIP, setExternalIPLocal} {
		rule("-A", chainIPVSFilter, match(s, "dst,dst"), "-j RETURN")
	}
	rule("-A", chainIPVSFilter, match(setHealthCheckNodePort, "dst"), "-j RETURN")
	rule("-A", chainIPVSFilter, "-m conntrack --ctstate NEW", match(setIPVSIPs, "dst"), "-j REJECT")
	b.WriteString("COMMIT\n")

	b.WriteString("*nat\n")
	for _, c := range natChains {
		rule(":" + c + " - [0:0]")
	}
	// Hairpin first: a local endpoint reaching itself is masqueraded whatever the mark.
	rule("-A", chainPostrouting, comment("Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"), match(setLoopBack, "dst,dst,src"), "-j MASQUERADE")
	rule("-A", chainPostrouting, "-m mark ! --mark "+mark+"/"+mark, "-j RETURN")
	rule("-A", chainPostrouting, "-j MARK --xor-mark", mark)
	rule("-A", chainPostrouting, comment("kubernetes service traffic requiring SNAT"), "-j MASQUERADE --random-fully")
	rule("-A", chainMarkMasq, "-j MARK --or-mark", mark)

	rule("-A", chainServices, comment("Kubernetes service lb portal"), match(setLoadBalancer, "dst,dst"), "-j", chainLoadBalancer)
	switch {
	case p.MasqueradeAll:
		rule("-A", chainServices, comment("Kubernetes service cluster ip + port for masquerade purpose"), match(setClusterIP, "dst,dst"), "-j", chainMarkMasq)
	case len(p.NotLocal) > 0:
		rule("-A", chainServices, strings.Join(p.NotLocal, " "), comment("Kubernetes service cluster ip + port for masquerade purpose"), match(setClusterIP, "dst,dst"), "-j", chainMarkMasq)
	default:
		// Without a detector only the node's own connections are masqueraded: they
		// leave with the VIP itself as source, since it is a local address.
		rule("-A", chainServices, comment("Kubernetes service cluster ip + port for masquerade purpose"), match(setClusterIP, "src,dst"), "-j", chainMarkMasq)
	}
	rule("-A", chainServices, comment("Kubernetes service external ip + port for masquerade and filter purpose"), match(setExternalIP, "dst,dst"), "-j", chainMarkMasq)
	if p.NodePortAll {
		args := []string{"-A", chainServices, "-m addrtype --dst-type LOCAL"}
		if f == model.IPv4 {
			args = append(args, "! -d 127.0.0.0/8")
		} else {
			args = append(args, "! -d ::1/128")
		}
		rule(append(args, "-j", chainNodePort)...)
	} else {
		for _, ip := range p.NodePortIPs {
			if model.FamilyOf(ip) == f && !ip.IsLoopback() {
				rule("-A", chainServices, "-d", ip.String(), "-j", chainNodePort)
			}
		}
	}
	// Accept Service traffic here, before other rules of the host's nat table could
	// rewrite it and take it away from IPVS.
	rule("-A", chainServices, match(setClusterIP, "dst,dst"), "-j ACCEPT")
	rule("-A", chainServices, match(setLoadBalancer, "dst,dst"), "-j ACCEPT")
	rule("-A", chainLoadBalancer, match(setLoadBalancerLocal, "dst,dst"), "-j RETURN")
	rule("-A", chainLoadBalancer, "-j", chainMarkMasq)
	for _, pr := range []struct{ proto, local, all, dims string }{
		{"tcp", setNodePortLocalTCP, setNodePortTCP, "dst"},
		{"udp", setNodePortLocalUDP, setNodePortUDP, "dst"},
		{"sctp", setNodePortLocalSCTP, setNodePortSCTP, "dst,dst"},
	} {
		rule("-A", chainNodePort, "-p", pr.proto, match(pr.local, pr.dims), "-j RETURN")
		rule("-A", chainNodePort, "-p", pr.proto, match(pr.all, pr.dims), "-j", chainMarkMasq)
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String())
}

// restoreInput is the iptables-restore input of a full write: the fixed rules, the
// jump rules the kernel lacks (inserted in the same transaction, in reverse so they
// end up in order) and the canary chain. Folding all of it into one restore matters
// where each iptables run is slow (the emulated test guest: about a second each).
func restoreInput(rules []byte, natSave, filterSave []byte) []byte {
	var out strings.Builder
	for _, section := range strings.SplitAfter(string(rules), "COMMIT\n") {
		if section == "" {
			continue
		}
		table := strings.TrimPrefix(strings.SplitN(section, "\n", 2)[0], "*")
		save := natSave
		if table == "filter" {
			save = filterSave
		}
		out.WriteString(strings.TrimSuffix(section, "COMMIT\n"))
		for i := len(jumps) - 1; i >= 0; i-- {
			j := jumps[i]
			if j.table == table && !bytes.Contains(save, []byte(j.saveLine())) {
				out.WriteString("-I " + j.chain + " " + quoteArgs(j.args) + "\n")
			}
		}
		out.WriteString("COMMIT\n")
	}
	out.WriteString("*mangle\n:" + chainCanary + " - [0:0]\nCOMMIT\n")
	return []byte(out.String())
}

// saveLine is the rule as iptables-save prints it.
func (j jump) saveLine() string { return "-A " + j.chain + " " + quoteArgs(j.args) + "\n" }

// quoteArgs joins arguments, quoting those with blanks as iptables-save does.
func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \t") {
			a = `"` + a + `"`
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// jump is a rule in a built-in chain that leads into one of ours.
type jump struct {
	table, chain string
	args         []string
}

// jumps are upstream's IPVS-mode jump rules.
var jumps = []jump{
	{"nat", "OUTPUT", []string{"-m", "comment", "--comment", "kubernetes service portals", "-j", chainServices}},
	{"nat", "PREROUTING", []string{"-m", "comment", "--comment", "kubernetes service portals", "-j", chainServices}},
	{"nat", "POSTROUTING", []string{"-m", "comment", "--comment", "kubernetes postrouting rules", "-j", chainPostrouting}},
	{"filter", "FORWARD", []string{"-m", "comment", "--comment", "kubernetes forwarding rules", "-j", chainForward}},
	{"filter", "INPUT", []string{"-m", "comment", "--comment", "kubernetes health check rules", "-j", chainNodePort}},
	{"filter", "INPUT", []string{"-m", "comment", "--comment", "kube-proxy firewall rules", "-j", chainProxyFirewall}},
	{"filter", "FORWARD", []string{"-m", "comment", "--comment", "kube-proxy firewall rules", "-j", chainProxyFirewall}},
	{"filter", "INPUT", []string{"-m", "comment", "--comment", "kubernetes ipvs access filter", "-j", chainIPVSFilter}},
	{"filter", "OUTPUT", []string{"-m", "comment", "--comment", "kubernetes ipvs access filter", "-j", chainIPVSOutFilter}},
}
