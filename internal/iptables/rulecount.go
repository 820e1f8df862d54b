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
func (c ruleCounts) apply(data []byte, full bool) {
	if full {
		for t := range c {
			delete(c, t)
		}
	}
	var table map[string]int
	for _, line := range bytes.Split(data, []byte("\n")) {
		switch {
		case len(line) > 1 && line[0] == '*':
			name := string(line[1:])
			if c[name] == nil {
				c[name] = map[string]int{}
			}
			table = c[name]
		case table == nil:
		case len(line) > 1 && line[0] == ':':
			if f := bytes.Fields(line[1:]); len(f) > 0 {
				table[string(f[0])] = 0
			}
		case bytes.HasPrefix(line, []byte("-A ")):
			if f := bytes.Fields(line[3:]); len(f) > 0 {
				table[string(f[0])]++
			}
		case bytes.HasPrefix(line, []byte("-X ")):
			if f := bytes.Fields(line[3:]); len(f) > 0 {
				delete(table, string(f[0]))
			}
		}
	}
}

// total is the number of rules in the table's chains.
func (c ruleCounts) total(table string) int {
	n := 0
	for _, r := range c[table] {
		n += r
	}
	return n
}
