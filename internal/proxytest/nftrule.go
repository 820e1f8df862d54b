package proxytest

import (
	"fmt"
	"strconv"
	"strings"
)

// parseNFTRule turns a rule in nft syntax into nft's JSON statements (the "expr"
// array of "nft -j list"), and its trailing comment. It knows the statements and
// expressions kube-proxy tables use.
func parseNFTRule(rule string) ([]any, string, error) {
	toks, err := nftTokens(rule)
	if err != nil {
		return nil, "", err
	}
	p := &nftParser{toks: toks}
	var stmts []any
	comment := ""
	for !p.done() {
		if p.peek() == "comment" {
			p.next()
			comment = strings.Trim(p.next(), `"`)
			continue
		}
		s, err := p.statement()
		if err != nil {
			return nil, "", err
		}
		stmts = append(stmts, s)
	}
	return stmts, comment, nil
}

// nftTokens splits a rule into words, keeping quoted strings whole and making "{",
// "}", "," and ":" words of their own (":" only between blanks, as in "0 : goto x").
func nftTokens(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inQuote := false
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			inQuote = !inQuote
			cur.WriteByte(c)
		case inQuote:
			cur.WriteByte(c)
		case c == ' ' || c == '\t':
			flush()
		case c == '{' || c == '}' || c == ',':
			flush()
			out = append(out, string(c))
		default:
			cur.WriteByte(c)
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote")
	}
	flush()
	return out, nil
}

type nftParser struct {
	toks []string
	i    int
}

func (p *nftParser) done() bool { return p.i >= len(p.toks) }

func (p *nftParser) peek() string {
	if p.done() {
		return ""
	}
	return p.toks[p.i]
}

func (p *nftParser) next() string {
	t := p.peek()
	p.i++
	return t
}

func (p *nftParser) expect(t string) error {
	if got := p.next(); got != t {
		return fmt.Errorf("expected %q, found %q", t, got)
	}
	return nil
}

var verdicts = map[string]bool{"accept": true, "drop": true, "return": true, "continue": true}

// statement parses one statement.
func (p *nftParser) statement() (any, error) {
	switch t := p.peek(); {
	case verdicts[t] || t == "counter":
		p.next()
		return map[string]any{t: nil}, nil
	case t == "reject":
		p.next()
		return map[string]any{"reject": nil}, nil
	case t == "jump" || t == "goto":
		p.next()
		return map[string]any{t: map[string]any{"target": p.next()}}, nil
	case t == "masquerade":
		p.next()
		if f := p.peek(); f == "fully-random" || f == "random" || f == "persistent" {
			return map[string]any{"masquerade": map[string]any{"flags": p.next()}}, nil
		}
		return map[string]any{"masquerade": nil}, nil
	case t == "dnat":
		return p.dnat()
	case t == "update" || t == "add":
		p.next()
		set := p.next()
		if err := p.expect("{"); err != nil {
			return nil, err
		}
		elem, err := p.expr()
		if err != nil {
			return nil, err
		}
		if err := p.expect("}"); err != nil {
			return nil, err
		}
		return map[string]any{"set": map[string]any{"op": t, "elem": elem, "set": set}}, nil
	case t == "mark" && p.i+1 < len(p.toks) && p.toks[p.i+1] == "set":
		p.i += 2
		v, err := p.expr()
		if err != nil {
			return nil, err
		}
		return map[string]any{"mangle": map[string]any{"key": map[string]any{"meta": map[string]any{"key": "mark"}}, "value": v}}, nil
	}
	// A match, or a verdict map lookup.
	left, err := p.expr()
	if err != nil {
		return nil, err
	}
	if p.peek() == "vmap" {
		p.next()
		data, err := p.rhs()
		if err != nil {
			return nil, err
		}
		return map[string]any{"vmap": map[string]any{"key": left, "data": data}}, nil
	}
	op := "=="
	if _, isCT := left.(map[string]any)["ct"]; isCT {
		op = "in" // nft prints flag matches this way
	}
	if t := p.peek(); t == "!=" || t == "==" {
		op = p.next()
	}
	right, err := p.rhs()
	if err != nil {
		return nil, err
	}
	return map[string]any{"match": map[string]any{"op": op, "left": left, "right": right}}, nil
}

// dnat parses "dnat to ADDR[:PORT]" and "dnat ip addr . port to EXPR map DATA".
func (p *nftParser) dnat() (any, error) {
	p.next()
	if p.peek() == "to" {
		p.next()
		target := p.next()
		addr, port := target, ""
		if strings.HasPrefix(target, "[") {
			a, rest, _ := strings.Cut(target[1:], "]")
			addr, port = a, strings.TrimPrefix(rest, ":")
		} else if strings.Count(target, ":") == 1 {
			addr, port, _ = strings.Cut(target, ":")
		}
		out := map[string]any{"addr": addr}
		if port != "" {
			n, err := strconv.Atoi(port)
			if err != nil {
				return nil, fmt.Errorf("dnat port %q", port)
			}
			out["port"] = n
		}
		return map[string]any{"dnat": out}, nil
	}
	family := p.next()
	for _, want := range []string{"addr", ".", "port", "to"} {
		if err := p.expect(want); err != nil {
			return nil, fmt.Errorf("dnat: %w", err)
		}
	}
	key, err := p.expr()
	if err != nil {
		return nil, err
	}
	if err := p.expect("map"); err != nil {
		return nil, fmt.Errorf("dnat: %w", err)
	}
	data, err := p.rhs()
	if err != nil {
		return nil, err
	}
	return map[string]any{"dnat": map[string]any{"family": family, "addr": map[string]any{"map": map[string]any{"key": key, "data": data}}}}, nil
}

// expr parses a concatenation of primary expressions ("ip daddr . meta l4proto").
func (p *nftParser) expr() (any, error) {
	var parts []any
	for {
		e, err := p.primary()
		if err != nil {
			return nil, err
		}
		parts = append(parts, e)
		if p.peek() != "." {
			break
		}
		p.next()
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	return map[string]any{"concat": parts}, nil
}

// primary parses one expression: a header field, meta, ct, fib, numgen or the mark
// (with a bitwise operation).
func (p *nftParser) primary() (any, error) {
	t := p.next()
	switch t {
	case "ip", "ip6", "th", "tcp", "udp", "sctp":
		return map[string]any{"payload": map[string]any{"protocol": t, "field": p.next()}}, nil
	case "meta":
		return map[string]any{"meta": map[string]any{"key": p.next()}}, nil
	case "iifname", "oifname", "iif", "oif":
		return map[string]any{"meta": map[string]any{"key": t}}, nil
	case "ct":
		return map[string]any{"ct": map[string]any{"key": p.next()}}, nil
	case "fib":
		flag := p.next()
		if err := p.expect("type"); err != nil {
			return nil, fmt.Errorf("fib: %w", err)
		}
		return map[string]any{"fib": map[string]any{"result": "type", "flags": []any{flag}}}, nil
	case "numgen":
		mode := p.next()
		if err := p.expect("mod"); err != nil {
			return nil, fmt.Errorf("numgen: %w", err)
		}
		n, err := strconv.Atoi(p.next())
		if err != nil {
			return nil, fmt.Errorf("numgen modulus: %w", err)
		}
		return map[string]any{"numgen": map[string]any{"mode": mode, "mod": n, "offset": 0}}, nil
	case "mark":
		mark := map[string]any{"meta": map[string]any{"key": "mark"}}
		ops := map[string]string{"and": "&", "or": "|", "xor": "^"}
		if op, ok := ops[p.peek()]; ok {
			p.next()
			v := atomJSON(p.next())
			return map[string]any{op: []any{mark, v}}, nil
		}
		return mark, nil
	}
	return nil, fmt.Errorf("expression %q is not known to the nft JSON renderer", t)
}

// rhs parses the right side of a match or the data of a lookup: a set reference,
// an anonymous set or map in braces, or a value.
func (p *nftParser) rhs() (any, error) {
	switch t := p.peek(); {
	case strings.HasPrefix(t, "@"):
		return p.next(), nil
	case t == "{":
		p.next()
		var elems []any
		for p.peek() != "}" {
			if p.done() {
				return nil, fmt.Errorf("unterminated {")
			}
			if p.peek() == "," {
				p.next()
				continue
			}
			key := atomJSON(p.next())
			if p.peek() != ":" {
				elems = append(elems, key)
				continue
			}
			p.next()
			v, err := p.statement()
			if err != nil {
				return nil, err
			}
			elems = append(elems, []any{key, v})
		}
		p.next()
		return map[string]any{"set": elems}, nil
	case t == "":
		return nil, fmt.Errorf("missing value")
	}
	return atomJSON(p.next()), nil
}
