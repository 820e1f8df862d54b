package proxytest

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"
)

// NFTJSON renders the table knftables' fake holds as "nft -j list table" prints it,
// which is what the tracer reads: chains (base chains with type, hook, priority and
// policy), sets and maps with their elements, and rules as nft's JSON statements.
// The rules are parsed from the nft syntax the fake keeps, for the vocabulary kube-proxy
// tables use; anything else is an error naming the rule, so a new rule shape cannot be
// traced wrongly without notice. internal/nftables' kernel test checks the rendering
// against nft's own JSON of the same table.
func NFTJSON(fake *knftables.Fake, family knftables.Family, table string) ([]byte, error) {
	fake.RLock()
	defer fake.RUnlock()
	t := fake.Tables[family][table]
	if t == nil {
		return nil, fmt.Errorf("nft JSON: the fake has no table %s %s", family, table)
	}
	fam := string(family)
	objs := []map[string]any{{"table": map[string]any{"family": fam, "name": table}}}
	for _, name := range sortedKeys(t.Chains) {
		c := t.Chains[name]
		obj := map[string]any{"family": fam, "table": table, "name": name}
		if c.Type != nil {
			obj["type"], obj["hook"], obj["policy"] = string(*c.Type), string(*c.Hook), "accept"
			prio, err := knftables.ParsePriority(family, string(*c.Priority))
			if err != nil {
				return nil, fmt.Errorf("nft JSON: chain %s: %w", name, err)
			}
			obj["prio"] = prio
		}
		objs = append(objs, map[string]any{"chain": obj})
	}
	for _, name := range sortedKeys(t.Sets) {
		s := t.Sets[name]
		obj, err := setJSON(fam, table, name, s.Type, s.Timeout != nil, s.Elements, false)
		if err != nil {
			return nil, err
		}
		if s.Timeout != nil {
			obj["timeout"] = int(s.Timeout.Seconds())
		}
		objs = append(objs, map[string]any{"set": obj})
	}
	for _, name := range sortedKeys(t.Maps) {
		m := t.Maps[name]
		obj, err := setJSON(fam, table, name, m.Type, false, m.Elements, true)
		if err != nil {
			return nil, err
		}
		objs = append(objs, map[string]any{"map": obj})
	}
	for _, name := range sortedKeys(t.Chains) {
		for _, r := range t.Chains[name].Rules {
			stmts, comment, err := parseNFTRule(r.Rule)
			if err != nil {
				return nil, fmt.Errorf("nft JSON: chain %s, rule %q: %w", name, r.Rule, err)
			}
			if r.Comment != nil {
				comment = *r.Comment
			}
			obj := map[string]any{"family": fam, "table": table, "chain": name, "expr": stmts}
			if comment != "" {
				obj["comment"] = comment
			}
			objs = append(objs, map[string]any{"rule": obj})
		}
	}
	return json.Marshal(map[string]any{"nftables": objs})
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// setJSON renders a set or map with its elements.
func setJSON(fam, table, name, typ string, timeout bool, els []*knftables.Element, isMap bool) (map[string]any, error) {
	obj := map[string]any{"family": fam, "table": table, "name": name}
	if typ != "" {
		obj["type"] = strings.Split(typ, " . ")
	}
	if timeout {
		obj["flags"] = []string{"timeout"}
	}
	var elems []any
	for _, e := range els {
		key := valueJSON(e.Key)
		if e.Comment != nil {
			key = map[string]any{"elem": map[string]any{"val": key, "comment": *e.Comment}}
		}
		if !isMap {
			elems = append(elems, key)
			continue
		}
		if len(e.Value) != 1 {
			return nil, fmt.Errorf("nft JSON: map %s: element %v has value %q", name, e.Key, e.Value)
		}
		elems = append(elems, []any{key, mapValueJSON(e.Value[0])})
	}
	if elems != nil {
		obj["elem"] = elems
	}
	return obj, nil
}

// valueJSON renders a key of one or more parts ("10.0.0.1", "tcp", "80", "0-32767").
func valueJSON(parts []string) any {
	if len(parts) == 1 {
		return atomJSON(parts[0])
	}
	out := make([]any, len(parts))
	for i, p := range parts {
		out[i] = atomJSON(p)
	}
	return map[string]any{"concat": out}
}

// mapValueJSON renders a map element's value: a verdict, or data ("10.0.0.1 . 80").
func mapValueJSON(v string) any {
	f := strings.Fields(v)
	switch {
	case len(f) == 2 && (f[0] == "goto" || f[0] == "jump"):
		return map[string]any{f[0]: map[string]any{"target": f[1]}}
	case len(f) == 1 && (f[0] == "drop" || f[0] == "accept" || f[0] == "reject" || f[0] == "return"):
		return map[string]any{f[0]: nil}
	}
	return valueJSON(strings.Split(v, " . "))
}

// atomJSON renders one value: a number, a numeric range, a prefix, or a string
// (addresses, protocols, flags).
func atomJSON(s string) any {
	s = strings.Trim(s, `"`)
	if n, err := strconv.ParseUint(s, 0, 64); err == nil {
		return n
	}
	if lo, hi, ok := strings.Cut(s, "-"); ok {
		a, err1 := strconv.ParseUint(lo, 10, 64)
		z, err2 := strconv.ParseUint(hi, 10, 64)
		if err1 == nil && err2 == nil {
			return map[string]any{"range": []any{a, z}}
		}
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return map[string]any{"prefix": map[string]any{"addr": p.Addr().String(), "len": p.Bits()}}
	}
	return s
}
