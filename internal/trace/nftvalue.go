package trace

import (
	"net/netip"
	"strconv"
	"strings"
)

// The packet's values, as nft expressions see them: netip.Addr for addresses, uint64
// for ports and marks, string for protocols and address types, []any for
// concatenations, ctFlags for conntrack state and status.
type ctFlags []string

// match evaluates a {"match": {"op", "left", "right"}} statement.
func (e *nftEval) match(b *branch, body any) bool {
	m, _ := body.(map[string]any)
	op, _ := m["op"].(string)
	v, ok := e.value(b, m["left"])
	if !ok {
		return false
	}
	right := m["right"]
	var matched bool
	if name, isRef := right.(string); isRef && strings.HasPrefix(name, "@") {
		matched = e.inSet(b, v, name[1:])
	} else {
		matched = keyMatches(v, right)
	}
	switch op {
	case "==", "in", "":
		return matched
	case "!=":
		return !matched
	case "<", ">", "<=", ">=":
		x, ok1 := v.(uint64)
		y, ok2 := right.(float64)
		if !ok1 || !ok2 {
			return false
		}
		switch op {
		case "<":
			return x < uint64(y)
		case ">":
			return x > uint64(y)
		case "<=":
			return x <= uint64(y)
		}
		return x >= uint64(y)
	}
	b.note("match operator %q is not understood by the tracer; treated as not matching", op)
	return false
}

// inSet looks a value up in a named set. The affinity sets (sets with a timeout) hold
// the clients that connected recently: the trace reports the affinity, and uses the
// set's current elements like the kernel does.
func (e *nftEval) inSet(b *branch, v any, name string) bool {
	set := e.t.sets[name]
	if set == nil {
		b.note("set @%s is not in the dump; treated as empty", name)
		return false
	}
	if set.timeout > 0 && b.affinity == 0 {
		b.affinity = set.timeout
	}
	for _, el := range set.elems {
		if keyMatches(v, el.key) {
			if set.timeout > 0 {
				b.note("session affinity: the client %s has an entry in @%s, so it goes back to that endpoint", b.f.src, name)
			}
			return true
		}
	}
	if set.timeout > 0 {
		b.note("session affinity: the client has no affinity entry yet; a client with one goes back to the endpoint it used last")
	}
	return false
}

// value evaluates an expression on the left of a match or the key of a lookup.
// ok is false when the tracer cannot know the value; the branch notes why.
func (e *nftEval) value(b *branch, x any) (any, bool) {
	switch t := x.(type) {
	case float64:
		return uint64(t), true
	case string:
		return t, true
	case []any:
		return nil, false
	}
	kind, body := only(x)
	m, _ := body.(map[string]any)
	f := &b.f
	switch kind {
	case "payload":
		proto, _ := m["protocol"].(string)
		field, _ := m["field"].(string)
		switch proto {
		case "ip", "ip6":
			if field == "saddr" {
				return f.src, true
			}
			if field == "daddr" {
				return f.dst, true
			}
		case "th", "tcp", "udp", "sctp":
			if proto != "th" && proto != f.proto {
				return nil, true // a header the packet does not have: matches nothing
			}
			if field == "dport" {
				return uint64(f.dport), true
			}
			if field == "sport" {
				if f.sport == 0 {
					b.note("a rule matches the source port but the source port is unknown (--source-port): treated as not matching")
					return nil, false
				}
				return uint64(f.sport), true
			}
		}
	case "meta":
		switch k, _ := m["key"].(string); k {
		case "l4proto", "protocol":
			if k == "protocol" {
				return map[bool]string{true: "ip6", false: "ip"}[!f.dst.Is4()], true
			}
			return f.proto, true
		case "mark":
			return uint64(f.mark), true
		case "nfproto":
			return map[bool]string{true: "ipv6", false: "ipv4"}[!f.dst.Is4()], true
		case "iifname", "iif":
			if f.iif == "" {
				b.note("a rule matches the input interface but the interface is unknown (--in-interface): treated as not matching")
				return nil, false
			}
			return f.iif, true
		}
	case "fib":
		flags, _ := m["flags"].([]any)
		for _, fl := range flags {
			var a netip.Addr
			switch fl {
			case "saddr":
				a = f.src
			case "daddr":
				a = f.dst
			default:
				continue
			}
			if e.env.isLocal(a) {
				return "local", true
			}
			if a.IsMulticast() {
				return "multicast", true
			}
			return "unicast", true
		}
	case "ct":
		switch k, _ := m["key"].(string); k {
		case "state":
			return ctFlags{"new"}, true
		case "status":
			var fl ctFlags
			if f.dnat {
				fl = append(fl, "dnat")
			}
			if f.masq {
				fl = append(fl, "snat")
			}
			return fl, true
		}
	case "&", "|", "^":
		ops, _ := body.([]any)
		if len(ops) == 2 {
			l, ok1 := e.value(b, ops[0])
			r, ok2 := e.value(b, ops[1])
			x, n1 := l.(uint64)
			y, n2 := r.(uint64)
			if ok1 && ok2 && n1 && n2 {
				switch kind {
				case "&":
					return x & y, true
				case "|":
					return x | y, true
				}
				return x ^ y, true
			}
		}
	case "concat":
		parts, _ := body.([]any)
		var out []any
		for _, p := range parts {
			v, ok := e.value(b, p)
			if !ok {
				return nil, false
			}
			out = append(out, v)
		}
		return out, true
	}
	b.note("expression %s is not understood by the tracer; rules using it do not match", renderExpr(x))
	return nil, false
}

// lookup finds the element of a set or map (named "@x", or anonymous) that key
// selects.
func (e *nftEval) lookup(b *branch, key, data any) (nftElem, bool) {
	v, ok := e.value(b, key)
	if !ok {
		return nftElem{}, false
	}
	for _, el := range e.elements(data) {
		if keyMatches(v, el.key) {
			return el, true
		}
	}
	return nftElem{}, false
}

func (e *nftEval) elements(data any) []nftElem {
	if name, ok := data.(string); ok && strings.HasPrefix(name, "@") {
		if s := e.t.sets[name[1:]]; s != nil {
			return s.elems
		}
		return nil
	}
	k, body := only(data)
	if k != "set" {
		return nil
	}
	list, _ := body.([]any)
	var out []nftElem
	for _, x := range list {
		out = append(out, parseElem(x, true))
	}
	return out
}

// keyMatches compares a packet value with a literal, prefix, range, concatenation or
// anonymous set from the JSON.
func keyMatches(v any, key any) bool {
	if v == nil {
		return false
	}
	switch k := key.(type) {
	case string:
		switch x := v.(type) {
		case netip.Addr:
			a, err := netip.ParseAddr(k)
			return err == nil && a == x
		case string:
			return strings.EqualFold(x, k)
		case uint64:
			n, err := strconv.ParseUint(k, 0, 64)
			return err == nil && n == x
		case ctFlags:
			for _, f := range x {
				if f == k {
					return true
				}
			}
		}
		return false
	case float64:
		switch x := v.(type) {
		case uint64:
			return x == uint64(k)
		case string:
			return protoNumbers[strconv.Itoa(int(k))] == x
		}
		return false
	case []any:
		for _, alt := range k {
			if keyMatches(v, alt) {
				return true
			}
		}
		return false
	}
	kind, body := only(key)
	switch kind {
	case "prefix":
		m, _ := body.(map[string]any)
		addr, _ := m["addr"].(string)
		n, _ := m["len"].(float64)
		x, ok := v.(netip.Addr)
		pfx, err := netip.ParsePrefix(addr + "/" + strconv.Itoa(int(n)))
		return ok && err == nil && pfx.Contains(x)
	case "range":
		r, _ := body.([]any)
		if len(r) != 2 {
			return false
		}
		switch x := v.(type) {
		case netip.Addr:
			lo, err1 := netip.ParseAddr(str(r[0]))
			hi, err2 := netip.ParseAddr(str(r[1]))
			return err1 == nil && err2 == nil && x.Compare(lo) >= 0 && x.Compare(hi) <= 0
		case uint64:
			lo, ok1 := r[0].(float64)
			hi, ok2 := r[1].(float64)
			return ok1 && ok2 && x >= uint64(lo) && x <= uint64(hi)
		}
		return false
	case "concat":
		parts, _ := body.([]any)
		vs, ok := v.([]any)
		if !ok || len(vs) != len(parts) {
			return false
		}
		for i := range parts {
			if !keyMatches(vs[i], parts[i]) {
				return false
			}
		}
		return true
	case "set":
		list, _ := body.([]any)
		return keyMatches(v, list)
	case "elem":
		m, _ := body.(map[string]any)
		return keyMatches(v, m["val"])
	}
	return false
}

func str(x any) string {
	s, _ := x.(string)
	return s
}
