package trace

import (
	"net/netip"
	"regexp"
	"strings"
)

// TraceNFTables traces a packet through the "ip kube-proxy" (or "ip6 kube-proxy")
// table of an "nft -j list ruleset" (or "nft -j list table ...") dump. Other tables
// are not evaluated.
func TraceNFTables(dump []byte, p Packet, env Env) (*Result, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	family := "ip"
	if p.IPv6() {
		family = "ip6"
	}
	t, err := parseNFTJSON(dump, family, NFTTable)
	if err != nil {
		return nil, err
	}
	e := &nftEval{t: t, env: &env, label: family + " " + NFTTable}
	start := &branch{f: newFlow(p), weight: 1}
	if p.From == FromNode && !env.isLocal(p.Source) {
		start.note("the packet comes from the node but its source %s is not a local address", p.Source)
	}
	var stages []nftStage
	if p.From == FromNode {
		stages = []nftStage{{hook: "output"}, {hook: "postrouting"}, {route: routeLoopback}}
	} else {
		stages = []nftStage{{hook: "prerouting"}, {route: routeIncoming}}
	}
	return summarize("nftables", p, e.run(start, stages)), nil
}

// nftStage is one hook's base chains, or a routing decision. filterOnly skips the nat
// chains: a looped-back packet's connection already has its NAT decided.
type nftStage struct {
	hook       string
	filterOnly bool
	route      routeKind
}

type nftEval struct {
	t     *nftTable
	env   *Env
	label string // "ip kube-proxy"
}

func (e *nftEval) run(b *branch, stages []nftStage) []*branch {
	if len(stages) == 0 || b.end != "" {
		return []*branch{b}
	}
	s, rest := stages[0], stages[1:]
	switch s.route {
	case routeIncoming:
		if e.env.isLocal(b.f.dst) {
			return e.run(b, append([]nftStage{{hook: "input"}}, rest...))
		}
		return e.run(b, append([]nftStage{{hook: "forward"}, {hook: "postrouting"}}, rest...))
	case routeLoopback:
		if e.env.isLocal(b.f.dst) {
			return e.run(b, append([]nftStage{{hook: "prerouting", filterOnly: true}, {hook: "input"}}, rest...))
		}
		return e.run(b, rest)
	}
	bs := []*branch{b}
	for _, c := range e.t.baseChains(s.hook) {
		if s.filterOnly && c.typ == "nat" {
			continue
		}
		var next []*branch
		for _, x := range bs {
			if x.end != "" {
				next = append(next, x)
				continue
			}
			for _, w := range e.walk(c, 0, x, 0) {
				if w.st == walkReturn && c.policy == "drop" {
					w.b.end = VerdictDrop
					w.b.step(e.label, c.name, "policy drop", "")
				}
				next = append(next, w.b)
			}
		}
		bs = next
	}
	var out []*branch
	for _, x := range bs {
		out = append(out, e.run(x, rest)...)
	}
	return out
}

// walk evaluates chain c from rule i on.
func (e *nftEval) walk(c *nftChain, i int, b *branch, depth int) []walkOut {
	if depth > maxDepth {
		b.note("chain %s: jumps nest deeper than %d; the walk stops there", c.name, maxDepth)
		return []walkOut{{b, walkReturn}}
	}
	if i >= len(c.rules) {
		return []walkOut{{b, walkReturn}}
	}
	return e.exec(c, i, 0, b, depth, false)
}

// exec runs the statements of rule i of chain c from statement s on, and then the
// rest of the chain. recorded says the rule is already in the branch's path.
func (e *nftEval) exec(c *nftChain, i, s int, b *branch, depth int, recorded bool) []walkOut {
	r := c.rules[i]
	record := func(extra string) {
		if !recorded {
			text := renderRule(r)
			if extra != "" {
				text += "   # " + extra
			}
			b.step(e.label, c.name, text, serviceFromChain(c.name))
			recorded = true
		}
	}
	for ; s < len(r.stmts); s++ {
		stmt, _ := r.stmts[s].(map[string]any)
		kind, body := only(stmt)
		switch kind {
		case "match":
			if !e.match(b, body) {
				return e.walk(c, i+1, b, depth)
			}
		case "vmap":
			m, _ := body.(map[string]any)
			if n, ok := numgenMod(m["key"]); ok {
				record("")
				return e.eachNumgen(n, m["data"], b, func(nb *branch, v any) []walkOut {
					return e.verdict(c, i, nb, v, depth)
				})
			}
			el, ok := e.lookup(b, m["key"], m["data"])
			if !ok {
				return e.walk(c, i+1, b, depth)
			}
			record("matched " + renderElem(el))
			if el.comment != "" && b.service == "" {
				b.service = serviceFromComment(el.comment)
			}
			return e.verdict(c, i, b, el.value, depth)
		case "mangle":
			record("")
			e.mangle(b, body)
		case "dnat":
			record("")
			m, _ := body.(map[string]any)
			if mp, ok := asMap(m["addr"])["map"].(map[string]any); ok {
				if n, ok := numgenMod(mp["key"]); ok {
					return e.eachNumgen(n, mp["data"], b, func(nb *branch, v any) []walkOut {
						e.dnatTo(nb, v, nil)
						return []walkOut{{nb, walkAccept}}
					})
				}
				b.note("dnat through a map keyed on something else than numgen is not understood by the tracer")
				return []walkOut{{b, walkAccept}}
			}
			e.dnatTo(b, m["addr"], m["port"])
			return []walkOut{{b, walkAccept}}
		case "masquerade", "snat":
			record("")
			b.f.masq = true
			return []walkOut{{b, walkAccept}}
		case "accept", "drop", "reject", "return", "jump", "goto", "continue":
			record("")
			return e.verdict(c, i, b, stmt, depth)
		case "counter", "log", "limit", "quota", "set", "notrack", "meta":
			record("")
		default:
			record("")
			b.note("rule %q: statement %s is not understood by the tracer; it was skipped", renderRule(r), kind)
		}
	}
	record("")
	return e.walk(c, i+1, b, depth)
}

// verdict applies a verdict object ({"goto": {"target": X}}, {"drop": null}, ...).
func (e *nftEval) verdict(c *nftChain, i int, b *branch, v any, depth int) []walkOut {
	kind, body := only(v)
	target := ""
	if m, ok := body.(map[string]any); ok {
		target, _ = m["target"].(string)
	}
	switch kind {
	case "accept":
		b.accepted = true
		return []walkOut{{b, walkAccept}}
	case "drop":
		b.end = VerdictDrop
		return []walkOut{{b, walkStop}}
	case "reject":
		b.end = VerdictReject
		return []walkOut{{b, walkStop}}
	case "return":
		return []walkOut{{b, walkReturn}}
	case "continue":
		return e.walk(c, i+1, b, depth)
	case "jump", "goto":
		sub := e.t.chains[target]
		if sub == nil {
			b.note("chain %s: jump to unknown chain %q", c.name, target)
			return e.walk(c, i+1, b, depth)
		}
		if b.service == "" {
			b.service = serviceFromChain(target)
		}
		if kind == "goto" {
			return e.walk(sub, 0, b, depth+1)
		}
		var outs []walkOut
		for _, w := range e.walk(sub, 0, b, depth+1) {
			if w.st == walkReturn {
				outs = append(outs, e.walk(c, i+1, w.b, depth)...)
			} else {
				outs = append(outs, w)
			}
		}
		return outs
	}
	b.note("chain %s: verdict %s is not understood by the tracer", c.name, kind)
	return e.walk(c, i+1, b, depth)
}

// eachNumgen splits the branch over "numgen random mod n": each map element takes the
// share of the n values its key covers (a value, or an interval such as kproxy's
// endpoint maps hold), and values no element covers go on as a failed lookup.
func (e *nftEval) eachNumgen(n int, data any, b *branch, then func(*branch, any) []walkOut) []walkOut {
	var outs []walkOut
	uncovered := uint64(n)
	for _, el := range e.elements(data) {
		lo, hi, ok := numgenSpan(el.key, uint64(n))
		if !ok {
			b.note("numgen map key %s is not understood by the tracer", renderExpr(el.key))
			continue
		}
		nb := b.clone()
		nb.weight *= float64(hi-lo+1) / float64(n)
		uncovered -= hi - lo + 1
		outs = append(outs, then(nb, el.value)...)
	}
	if uncovered > 0 {
		// No element for these numbers: the lookup fails and the packet goes on.
		nb := b.clone()
		nb.weight *= float64(uncovered) / float64(n)
		nb.note("%d of the %d numgen values have no map element", uncovered, n)
		outs = append(outs, walkOut{nb, walkReturn})
	}
	return outs
}

// numgenSpan reads a numgen map key, a number or a range, as the values [lo, hi] it
// covers below n.
func numgenSpan(key any, n uint64) (lo, hi uint64, ok bool) {
	switch k := key.(type) {
	case float64:
		lo, hi = uint64(k), uint64(k)
	default:
		kind, body := only(key)
		r, _ := body.([]any)
		if kind != "range" || len(r) != 2 {
			return 0, 0, false
		}
		a, ok1 := r[0].(float64)
		z, ok2 := r[1].(float64)
		if !ok1 || !ok2 || a > z {
			return 0, 0, false
		}
		lo, hi = uint64(a), uint64(z)
	}
	if lo >= n {
		return 0, 0, false
	}
	return lo, min(hi, n-1), true
}

func (e *nftEval) dnatTo(b *branch, addr, port any) {
	if c, ok := asMap(addr)["concat"].([]any); ok && len(c) == 2 {
		addr, port = c[0], c[1]
	}
	s, _ := addr.(string)
	a, err := netip.ParseAddr(s)
	if err != nil {
		b.note("cannot read the dnat address %v", addr)
		return
	}
	b.f.dst, b.f.dnat = a, true
	if p, ok := port.(float64); ok {
		b.f.dport = uint16(p)
	}
}

func (e *nftEval) mangle(b *branch, body any) {
	m, _ := body.(map[string]any)
	if k, _ := only(m["key"]); k != "meta" || metaKey(m["key"]) != "mark" {
		b.note("mangle of %s is not understood by the tracer", renderExpr(m["key"]))
		return
	}
	v, ok := e.value(b, m["value"])
	if n, isNum := v.(uint64); ok && isNum {
		b.f.mark = uint32(n)
	}
}

// asMap returns x as a JSON object, or nil (which reads as empty).
func asMap(x any) map[string]any {
	m, _ := x.(map[string]any)
	return m
}

func metaKey(x any) string {
	_, body := only(x)
	m, _ := body.(map[string]any)
	k, _ := m["key"].(string)
	return k
}

// only returns the single key and value of a one-key JSON object.
func only(x any) (string, any) {
	m, ok := x.(map[string]any)
	if !ok {
		return "", nil
	}
	for k, v := range m {
		return k, v
	}
	return "", nil
}

func numgenMod(x any) (int, bool) {
	k, body := only(x)
	if k != "numgen" {
		return 0, false
	}
	m, _ := body.(map[string]any)
	if mode, _ := m["mode"].(string); mode != "random" {
		return 0, false
	}
	n, ok := m["mod"].(float64)
	return int(n), ok && n > 0
}

var nftPortChain = regexp.MustCompile(`^(service|local|external|firewall|endpoint)-[A-Z2-7]{8}-([^/]+)/([^/]+)/([^/]+)/([^/_]*)`)

// serviceFromChain reads "ns/name:port" from a per-ServicePort chain name
// ("service-ULMVA6XW-ns1/svc1/tcp/p80").
func serviceFromChain(name string) string {
	m := nftPortChain.FindStringSubmatch(name)
	if m == nil {
		return ""
	}
	s := m[2] + "/" + m[3]
	if m[5] != "" {
		s += ":" + m[5]
	}
	return strings.TrimSuffix(s, "...")
}
