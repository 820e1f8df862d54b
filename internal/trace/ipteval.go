package trace

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// TraceIPTables traces a packet through an iptables-save dump of its family. The dump
// needs the nat and filter tables; when a table lacks its built-in chains (restore
// input, like the one kproxy's builder writes), kube-proxy's standard jump rules into
// its chains are assumed, and the result notes it.
func TraceIPTables(dump []byte, p Packet, env Env) (*Result, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	d, err := parseIPTablesSave(dump)
	if err != nil {
		return nil, err
	}
	e := &iptEval{d: d, env: &env}
	start := &branch{f: newFlow(p), weight: 1}
	if p.From == FromNode && !env.isLocal(p.Source) {
		start.note("the packet comes from the node but its source %s is not a local address", p.Source)
	}
	var stages []iptStage
	if p.From == FromNode {
		stages = []iptStage{{table: "nat", chain: "OUTPUT"}, {table: "filter", chain: "OUTPUT"}, {table: "nat", chain: "POSTROUTING"}, {route: routeLoopback}}
	} else {
		stages = []iptStage{{table: "nat", chain: "PREROUTING"}, {route: routeIncoming}}
	}
	return summarize("iptables", p, e.run(start, stages)), nil
}

type routeKind int

const (
	routeNone     routeKind = iota
	routeIncoming           // after PREROUTING: to INPUT if the destination is local, else FORWARD
	routeLoopback           // after a local packet's POSTROUTING: to INPUT if the destination is local
)

// iptStage is one (table, built-in chain) traversal, or a routing decision.
type iptStage struct {
	table, chain string
	route        routeKind
}

type iptEval struct {
	d   *iptDump
	env *Env
}

// walkStatus is how a chain walk ended.
type walkStatus int

const (
	walkReturn walkStatus = iota // fell off the end, or RETURN
	walkAccept                   // ACCEPT, or a NAT target: the table is done with the packet
	walkStop                     // DROP or REJECT: the packet is gone
)

type walkOut struct {
	b  *branch
	st walkStatus
}

const maxDepth = 64

// run takes a branch through the stages in order; each stage may split it.
func (e *iptEval) run(b *branch, stages []iptStage) []*branch {
	if len(stages) == 0 || b.end != "" {
		return []*branch{b}
	}
	s, rest := stages[0], stages[1:]
	switch s.route {
	case routeIncoming:
		if e.env.isLocal(b.f.dst) {
			return e.run(b, append([]iptStage{{"filter", "INPUT", routeNone}}, rest...))
		}
		return e.run(b, append([]iptStage{{"filter", "FORWARD", routeNone}, {"nat", "POSTROUTING", routeNone}}, rest...))
	case routeLoopback:
		if e.env.isLocal(b.f.dst) {
			return e.run(b, append([]iptStage{{"filter", "INPUT", routeNone}}, rest...))
		}
		return e.run(b, rest)
	}
	var out []*branch
	for _, ob := range e.runBuiltin(s.table, s.chain, b) {
		out = append(out, e.run(ob, rest)...)
	}
	return out
}

// runBuiltin walks a built-in chain and applies its policy to what falls off its end.
func (e *iptEval) runBuiltin(table, chain string, b *branch) []*branch {
	t := e.d.tables[table]
	if t == nil {
		return []*branch{b}
	}
	c := t.chains[chain]
	if c == nil {
		c = e.assumedJumps(t, chain)
		if len(c.rules) > 0 {
			b.note("the dump has no %s %s chain: the tracer assumed kube-proxy's jump rules into it", table, chain)
		}
	}
	var out []*branch
	for _, w := range e.walk(t, c, 0, b, 0) {
		if w.st == walkReturn && c.policy == "DROP" {
			w.b.end = VerdictDrop
			w.b.step(table, chain, "policy DROP", "")
		}
		out = append(out, w.b)
	}
	return out
}

// walk evaluates chain c from rule index i on; statistic matches split the branch.
func (e *iptEval) walk(t *iptTable, c *iptChain, i int, b *branch, depth int) []walkOut {
	if depth > maxDepth {
		b.note("chain %s: jumps nest deeper than %d; the walk stops there", c.name, maxDepth)
		return []walkOut{{b, walkReturn}}
	}
	var outs []walkOut
	for ; i < len(c.rules); i++ {
		r := c.rules[i]
		ok, p := e.ruleMatch(b, r)
		if !ok || p <= 0 {
			continue
		}
		if p < 1 {
			// The rule matches with probability p: the other branch goes on below it.
			nb := b.clone()
			nb.weight *= 1 - p
			outs = append(outs, e.walk(t, c, i+1, nb, depth)...)
			b.weight *= p
		}
		b.step(t.name, c.name, r.text, serviceFromComment(r.comment))
		switch r.target {
		case "":
			continue
		case "RETURN":
			return append(outs, walkOut{b, walkReturn})
		case "ACCEPT":
			b.accepted = b.accepted || strings.HasPrefix(c.name, "KUBE-")
			return append(outs, walkOut{b, walkAccept})
		case "DROP":
			b.end = VerdictDrop
			return append(outs, walkOut{b, walkStop})
		case "REJECT":
			b.end = VerdictReject
			return append(outs, walkOut{b, walkStop})
		case "DNAT":
			e.dnat(b, r)
			return append(outs, walkOut{b, walkAccept})
		case "MASQUERADE", "SNAT":
			b.f.masq = true
			return append(outs, walkOut{b, walkAccept})
		case "MARK":
			e.mark(b, r)
			continue
		case "LOG", "NFLOG", "TRACE", "COUNTER", "CONNMARK", "NFQUEUE":
			continue
		}
		sub := t.chains[r.target]
		if sub == nil {
			b.note("rule %q: target %s is not understood by the tracer; it was skipped", r.text, r.target)
			continue
		}
		for _, w := range e.walk(t, sub, 0, b, depth+1) {
			if w.st == walkReturn && !r.isGoto {
				outs = append(outs, e.walk(t, c, i+1, w.b, depth)...)
			} else {
				outs = append(outs, w)
			}
		}
		return outs
	}
	return append(outs, walkOut{b, walkReturn})
}

func (e *iptEval) dnat(b *branch, r *iptRule) {
	for _, o := range r.targetOpts {
		if o.name != "--to-destination" {
			continue
		}
		addr, port, ok := parseDNATTarget(o.val())
		if !ok {
			b.note("rule %q: cannot read the DNAT target %q", r.text, o.val())
			return
		}
		b.f.dst = addr
		if port != 0 {
			b.f.dport = port
		}
		b.f.dnat = true
		return
	}
	b.note("rule %q: DNAT without --to-destination", r.text)
}

// parseDNATTarget reads "IP", "IP:port", "[IPv6]:port", using the first address and
// port of a range ("IP1-IP2:p1-p2").
func parseDNATTarget(s string) (netip.Addr, uint16, bool) {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		i := strings.Index(s, "]")
		if i < 0 {
			return netip.Addr{}, 0, false
		}
		host, port = s[1:i], strings.TrimPrefix(s[i+1:], ":")
	} else if strings.Count(s, ":") == 1 {
		host, port, _ = strings.Cut(s, ":")
	}
	host, _, _ = strings.Cut(host, "-")
	port, _, _ = strings.Cut(port, "-")
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, 0, false
	}
	if port == "" {
		return a, 0, true
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return a, uint16(n), err == nil
}

func (e *iptEval) mark(b *branch, r *iptRule) {
	for _, o := range r.targetOpts {
		v, m, ok := parseMark(o.val())
		if !ok {
			b.note("rule %q: cannot read the mark %q", r.text, o.val())
			return
		}
		switch o.name {
		case "--set-xmark":
			b.f.mark = (b.f.mark &^ m) ^ v
		case "--set-mark":
			b.f.mark = (b.f.mark &^ m) | v
		case "--or-mark":
			b.f.mark |= v
		case "--xor-mark":
			b.f.mark ^= v
		case "--and-mark":
			b.f.mark &= v
		default:
			b.note("rule %q: MARK option %s is not understood by the tracer", r.text, o.name)
		}
	}
}

// standardJumps are kube-proxy's jump rules from the built-in chains (reference 2.1),
// plus kubelet's into KUBE-FIREWALL: what a node has around a restore input.
var standardJumps = map[string][]string{
	"nat": {
		`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`,
	},
	"filter": {
		`-A INPUT -j KUBE-FIREWALL`,
		`-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`,
		`-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS`,
		`-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES`,
		`-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`,
		`-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD`,
		`-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES`,
		`-A OUTPUT -j KUBE-FIREWALL`,
		`-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`,
		`-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
	},
}

// assumedJumps builds a missing built-in chain from the standard jumps whose target
// chain the table has.
func (e *iptEval) assumedJumps(t *iptTable, chain string) *iptChain {
	c := &iptChain{name: chain, policy: "ACCEPT"}
	for _, line := range standardJumps[t.name] {
		r, err := parseIPTablesRule(line)
		if err != nil || r.chain != chain || t.chains[r.target] == nil {
			continue
		}
		c.rules = append(c.rules, r)
	}
	return c
}

var servicePortName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[-a-z0-9]+)?$`)

// serviceFromComment finds "ns/name:port" in a kube-proxy rule comment ("ns1/svc1:p80
// cluster IP", "masquerade traffic for ns/svc:p external destinations", ...).
func serviceFromComment(comment string) string {
	for _, w := range strings.Fields(comment) {
		if _, err := netip.ParsePrefix(w); err == nil {
			continue
		}
		if servicePortName.MatchString(w) {
			return w
		}
	}
	return ""
}
