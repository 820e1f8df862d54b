package iptables

import "bytes"

// ruleCounts tracks how many rules each of kproxy's chains holds in the kernel, per
// table, from the restore inputs that succeeded. A partial sync rewrites only some
// chains, so its own line count is not the total upstream's
// sync_proxy_rules_iptables_total reports.
type ruleCounts map[string]map[string]int

// apply updates the counts with a restore input that succeeded: a declared chain
// (":CHAIN") is flushed by iptables-restore, "-A CHAIN" adds a rule, "-X CHAIN"
// deletes the chain. A full input declares every chain kproxy owns, so it starts over.
func (c ruleCounts) apply(in Input, full bool) {
	if full {
		for t := range c {
			delete(c, t)
		}
	}
	var table map[string]int
	in.lines(func(line []byte) {
		switch {
		case len(line) > 1 && line[0] == '*':
			name := string(line[1:])
			if c[name] == nil {
				c[name] = map[string]int{}
			}
			table = c[name]
		case table == nil:
		case len(line) > 1 && line[0] == ':':
			if w := firstWord(line[1:]); len(w) > 0 {
				table[string(w)] = 0
			}
		case bytes.HasPrefix(line, []byte("-A ")):
			if w := firstWord(line[3:]); len(w) > 0 {
				table[string(w)]++
			}
		case bytes.HasPrefix(line, []byte("-X ")):
			if w := firstWord(line[3:]); len(w) > 0 {
				delete(table, string(w))
			}
		}
	})
}

// firstWord is b's first blank-separated word (a chain name), without allocating.
func firstWord(b []byte) []byte {
	b = bytes.TrimLeft(b, " \t")
	if i := bytes.IndexAny(b, " \t"); i >= 0 {
		return b[:i]
	}
	return b
}

// total is the number of rules in the table's chains.
func (c ruleCounts) total(table string) int {
	n := 0
	for _, r := range c[table] {
		n += r
	}
	return n
}
