package trace

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// renderRule writes a rule of nft's JSON back in nft's own syntax, close to what
// "nft list ruleset" prints, so the trace path reads like the ruleset.
func renderRule(r *nftRule) string {
	var parts []string
	for _, s := range r.stmts {
		parts = append(parts, renderStmt(s))
	}
	text := strings.Join(parts, " ")
	if r.comment != "" {
		text += " comment " + strconv.Quote(r.comment)
	}
	return text
}

func renderStmt(s any) string {
	kind, body := only(s)
	m, _ := body.(map[string]any)
	switch kind {
	case "match":
		op, _ := m["op"].(string)
		l, r := renderExpr(m["left"]), renderExpr(m["right"])
		if op == "==" || op == "in" {
			return l + " " + r
		}
		return l + " " + op + " " + r
	case "vmap":
		return renderExpr(m["key"]) + " vmap " + renderExpr(m["data"])
	case "mangle":
		return renderExpr(m["key"]) + " set " + renderExpr(m["value"])
	case "dnat", "snat":
		if mp, ok := asMap(m["addr"])["map"]; ok {
			fam, _ := m["family"].(string)
			return kind + " " + fam + " addr . port to " + renderMap(mp)
		}
		to := renderExpr(m["addr"])
		if p, ok := m["port"]; ok {
			if strings.Contains(to, ":") {
				to = "[" + to + "]"
			}
			to += ":" + renderExpr(p)
		}
		return kind + " to " + to
	case "masquerade":
		if f := renderFlags(m["flags"]); f != "" {
			return "masquerade " + f
		}
		return "masquerade"
	case "reject":
		return "reject"
	case "set":
		op, _ := m["op"].(string)
		set, _ := m["set"].(string)
		return op + " " + set + " { " + renderExpr(m["elem"]) + " }"
	case "counter", "accept", "drop", "return", "continue":
		return kind
	case "jump", "goto":
		t, _ := m["target"].(string)
		return kind + " " + t
	}
	return kind
}

func renderFlags(f any) string {
	switch v := f.(type) {
	case string:
		return v
	case []any:
		var out []string
		for _, x := range v {
			out = append(out, str(x))
		}
		return strings.Join(out, ",")
	}
	return ""
}

func renderMap(mp any) string {
	m, _ := mp.(map[string]any)
	return renderExpr(m["key"]) + " map " + renderExpr(m["data"])
}

func renderExpr(x any) string {
	switch v := x.(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case []any:
		var out []string
		for _, e := range v {
			out = append(out, renderExpr(e))
		}
		return "{ " + strings.Join(out, ", ") + " }"
	}
	kind, body := only(x)
	m, _ := body.(map[string]any)
	switch kind {
	case "payload":
		return str(m["protocol"]) + " " + str(m["field"])
	case "meta":
		if k := str(m["key"]); k != "mark" {
			return "meta " + k
		}
		return "mark"
	case "ct":
		return "ct " + str(m["key"])
	case "fib":
		return "fib " + strings.ReplaceAll(renderFlags(m["flags"]), ",", " . ") + " " + str(m["result"])
	case "numgen":
		return fmt.Sprintf("numgen %s mod %s", str(m["mode"]), renderExpr(m["mod"]))
	case "prefix":
		return str(m["addr"]) + "/" + renderExpr(m["len"])
	case "range":
		r, _ := body.([]any)
		if len(r) == 2 {
			return renderExpr(r[0]) + "-" + renderExpr(r[1])
		}
	case "concat":
		parts, _ := body.([]any)
		var out []string
		for _, p := range parts {
			out = append(out, renderExpr(p))
		}
		return strings.Join(out, " . ")
	case "set":
		list, _ := body.([]any)
		var out []string
		for _, e := range list {
			out = append(out, renderElem(parseElem(e, true)))
		}
		return "{ " + strings.Join(out, ", ") + " }"
	case "map":
		return renderMap(body)
	case "elem":
		return renderExpr(m["val"])
	case "&", "|", "^":
		ops, _ := body.([]any)
		if len(ops) == 2 {
			word := map[string]string{"&": "and", "|": "or", "^": "xor"}[kind]
			r := renderExpr(ops[1])
			if n, ok := ops[1].(float64); ok {
				r = fmt.Sprintf("0x%x", uint64(n))
			}
			return renderExpr(ops[0]) + " " + word + " " + r
		}
	case "goto", "jump":
		return kind + " " + str(m["target"])
	case "accept", "drop", "return", "continue":
		return kind
	}
	// Anything else: its JSON keys, so the path still says what was there.
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return kind + "(" + strings.Join(keys, ",") + ")"
}

// renderElem writes "key" or "key : value".
func renderElem(el nftElem) string {
	s := renderExpr(el.key)
	if el.value != nil {
		s += " : " + renderExpr(el.value)
	}
	return s
}
