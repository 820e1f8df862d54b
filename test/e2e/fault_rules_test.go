package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// ruleset is a normalized picture of what a proxy mode programmed in node1, one
// line per chain declaration, rule and set element, sorted, so two pictures can be
// compared whatever order the kernel lists things in (nft prints hash-set elements
// in bucket order, iptables-nft lists chains in creation order) and whatever the
// counters say. Duplicates stay: a rule written twice shows as two equal lines.
type ruleset []string

// rulesetOpts says how much of the order to keep.
type rulesetOpts struct {
	// ordered numbers each rule by its position in its chain, so a reordering (or an
	// insertion above it) is a difference. Off, the picture is a multiset of rules:
	// "no rule removed" is then a sub-multiset check.
	ordered bool
}

// kproxyRuleset reads node1's ruleset for mode: all of iptables-save for iptables
// (kproxy's KUBE-* chains and its jumps in the built-in chains), kproxy's
// "ip kube-proxy" table for nftables.
func kproxyRuleset(c *cluster.Cluster, mode string, o rulesetOpts) (ruleset, error) {
	if mode == "nftables" {
		out, err := c.Exec(cluster.KproxyNode, "nft", "-j", "list", "table", "ip", "kube-proxy")
		if err != nil {
			return nil, fmt.Errorf("nft -j list table ip kube-proxy in %s: %w: %s", c.NS(cluster.KproxyNode), err, firstLine(out))
		}
		return normalizeNFT(out, o)
	}
	out, err := c.Exec(cluster.KproxyNode, "iptables-save")
	if err != nil {
		return nil, fmt.Errorf("iptables-save in %s: %w: %s", c.NS(cluster.KproxyNode), err, firstLine(out))
	}
	return normalizeIPTables(out, o), nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

var packetCounts = regexp.MustCompile(`\[\d+:\d+\]`)

// normalizeIPTables turns an iptables-save dump into a ruleset: "table :CHAIN
// POLICY" per chain, "table -A CHAIN [#n] rule" per rule; comments and counters go.
func normalizeIPTables(dump string, o rulesetOpts) ruleset {
	var out ruleset
	table := ""
	pos := map[string]int{}
	for _, line := range strings.Split(dump, "\n") {
		switch {
		case strings.HasPrefix(line, "#"), line == "", line == "COMMIT":
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":"):
			out = append(out, table+" "+strings.TrimSpace(packetCounts.ReplaceAllString(line, "")))
		case strings.HasPrefix(line, "-A "):
			chain := strings.Fields(line)[1]
			if o.ordered {
				pos[table+chain]++
				line = fmt.Sprintf("-A %s #%d%s", chain, pos[table+chain], strings.TrimPrefix(line, "-A "+chain))
			}
			out = append(out, table+" "+line)
		default:
			out = append(out, table+" ? "+line)
		}
	}
	sort.Strings(out)
	return out
}

// normalizeNFT turns `nft -j list table` into a ruleset: one line per object
// without its kernel handle, set and map elements one per line, rules numbered in
// their chain when ordered, every counter zeroed.
func normalizeNFT(js string, o rulesetOpts) (ruleset, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(js), &doc); err != nil {
		return nil, fmt.Errorf("nft -j output: %w", err)
	}
	var out ruleset
	pos := map[string]int{}
	for _, entry := range doc.Nftables {
		for kind, raw := range entry {
			if kind == "metainfo" {
				continue
			}
			var obj map[string]any
			if err := json.Unmarshal(raw, &obj); err != nil {
				return nil, fmt.Errorf("nft -j %s: %w", kind, err)
			}
			scrub(obj)
			if elems, ok := obj["elem"].([]any); ok {
				delete(obj, "elem")
				for _, el := range elems {
					b, _ := json.Marshal(el)
					out = append(out, fmt.Sprintf("%s %v elem %s", kind, obj["name"], b))
				}
			}
			prefix := kind
			if kind == "rule" && o.ordered {
				chain := fmt.Sprint(obj["chain"])
				pos[chain]++
				prefix = fmt.Sprintf("rule #%d", pos[chain])
			}
			b, _ := json.Marshal(obj) // map keys marshal sorted
			out = append(out, prefix+" "+string(b))
		}
	}
	sort.Strings(out)
	return out, nil
}

// scrub drops what differs between two programmings of the same rules: kernel
// handles and counter values.
func scrub(v any) {
	switch x := v.(type) {
	case map[string]any:
		delete(x, "handle")
		for k, val := range x {
			if k == "packets" || k == "bytes" {
				x[k] = 0
				continue
			}
			scrub(val)
		}
	case []any:
		for _, val := range x {
			scrub(val)
		}
	}
}

// diff lists the lines only in a and only in b (as multisets), at most limit each.
func (a ruleset) diff(b ruleset, limit int) (onlyA, onlyB []string) {
	count := map[string]int{}
	for _, l := range b {
		count[l]++
	}
	for _, l := range a {
		if count[l] > 0 {
			count[l]--
			continue
		}
		if len(onlyA) < limit {
			onlyA = append(onlyA, l)
		}
	}
	for _, l := range b {
		if count[l] > 0 && len(onlyB) < limit {
			onlyB = append(onlyB, l)
			count[l]--
		}
	}
	return onlyA, onlyB
}

// missingFrom lists the lines of a that b lacks (multiset), at most limit.
func (a ruleset) missingFrom(b ruleset, limit int) []string {
	onlyA, _ := a.diff(b, limit)
	return onlyA
}

// equal reports whether a and b hold the same lines the same number of times.
func (a ruleset) equal(b ruleset) bool { return slices.Equal(a, b) }

// describeDiff is a failure message body: the sizes and the first differences.
func describeDiff(nameA string, a ruleset, nameB string, b ruleset) string {
	onlyA, onlyB := a.diff(b, 15)
	return fmt.Sprintf("%s has %d lines, %s %d\nonly in %s (first %d):\n  %s\nonly in %s (first %d):\n  %s",
		nameA, len(a), nameB, len(b), nameA, len(onlyA), strings.Join(onlyA, "\n  "), nameB, len(onlyB), strings.Join(onlyB, "\n  "))
}
