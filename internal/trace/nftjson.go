package trace

import (
	"encoding/json"
	"fmt"
	"sort"
)

// NFTTable is the name of the nftables table kproxy (like upstream kube-proxy) uses in
// each of the "ip" and "ip6" families.
const NFTTable = "kube-proxy"

// nftTable is one table of "nft -j list ruleset" output.
type nftTable struct {
	family string
	name   string
	chains map[string]*nftChain
	sets   map[string]*nftSet // sets and maps, by name
}

type nftChain struct {
	name   string
	typ    string // "filter", "nat", "route" for base chains
	hook   string // "" for regular chains
	prio   int
	policy string
	rules  []*nftRule
}

type nftRule struct {
	stmts   []any // the "expr" array, as decoded JSON
	comment string
}

type nftSet struct {
	name    string
	isMap   bool
	timeout int // seconds; > 0 for the affinity sets
	elems   []nftElem
}

// nftElem is a set element, or a map element with its value.
type nftElem struct {
	key     any
	value   any // nil for set elements
	comment string
}

// parseNFTJSON reads "nft -j list ruleset" (or "list table") output and returns the
// table family/name, or an error naming what is missing.
func parseNFTJSON(data []byte, family, name string) (*nftTable, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("nft JSON: %w", err)
	}
	t := &nftTable{family: family, name: name, chains: map[string]*nftChain{}, sets: map[string]*nftSet{}}
	found := false
	for i, obj := range doc.Nftables {
		for kind, raw := range obj {
			var head struct {
				Family string `json:"family"`
				Table  string `json:"table"`
				Name   string `json:"name"`
			}
			if err := json.Unmarshal(raw, &head); err != nil {
				continue // metainfo and other non-object entries
			}
			if kind == "table" {
				if head.Family == family && head.Name == name {
					found = true
				}
				continue
			}
			if head.Family != family || head.Table != name {
				continue
			}
			if err := t.add(kind, raw); err != nil {
				return nil, fmt.Errorf("nft JSON object %d (%s in table %s %s): %w", i, kind, family, name, err)
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("nft JSON has no table %s %s", family, name)
	}
	return t, nil
}

func (t *nftTable) add(kind string, raw json.RawMessage) error {
	switch kind {
	case "chain":
		var c struct {
			Name   string `json:"name"`
			Type   string `json:"type"`
			Hook   string `json:"hook"`
			Prio   any    `json:"prio"`
			Policy string `json:"policy"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return err
		}
		ch := t.chain(c.Name)
		ch.typ, ch.hook, ch.policy, ch.prio = c.Type, c.Hook, c.Policy, priority(c.Prio)
	case "rule":
		var r struct {
			Chain   string `json:"chain"`
			Comment string `json:"comment"`
			Expr    []any  `json:"expr"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		ch := t.chain(r.Chain)
		ch.rules = append(ch.rules, &nftRule{stmts: r.Expr, comment: r.Comment})
	case "set", "map":
		var s struct {
			Name    string `json:"name"`
			Timeout any    `json:"timeout"`
			Elem    []any  `json:"elem"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		set := &nftSet{name: s.Name, isMap: kind == "map"}
		if n, ok := s.Timeout.(float64); ok {
			set.timeout = int(n)
		}
		for _, e := range s.Elem {
			set.elems = append(set.elems, parseElem(e, set.isMap))
		}
		t.sets[s.Name] = set
	}
	return nil
}

func (t *nftTable) chain(name string) *nftChain {
	c := t.chains[name]
	if c == nil {
		c = &nftChain{name: name}
		t.chains[name] = c
	}
	return c
}

// parseElem reads a set element ("1.2.3.4", {"concat": [...]}, {"elem": {"val": ...,
// "comment": ...}}) or a map element ([key, value]).
func parseElem(e any, isMap bool) nftElem {
	var out nftElem
	if pair, ok := e.([]any); ok && isMap && len(pair) == 2 {
		out.value = pair[1]
		e = pair[0]
	}
	if m, ok := e.(map[string]any); ok {
		if inner, ok := m["elem"].(map[string]any); ok {
			out.key = inner["val"]
			out.comment, _ = inner["comment"].(string)
			return out
		}
	}
	out.key = e
	return out
}

// priority reads a chain priority: a number, or one of nft's standard names.
func priority(p any) int {
	switch v := p.(type) {
	case float64:
		return int(v)
	case string:
		return map[string]int{"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}[v]
	}
	return 0
}

// baseChains returns the table's base chains on a hook, in priority order.
func (t *nftTable) baseChains(hook string) []*nftChain {
	var out []*nftChain
	for _, c := range t.chains {
		if c.hook == hook {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].prio != out[j].prio {
			return out[i].prio < out[j].prio
		}
		return out[i].name < out[j].name
	})
	return out
}
