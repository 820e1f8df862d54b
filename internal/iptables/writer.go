package iptables

import (
	"bytes"
	"strings"
)

// lines accumulates iptables-restore input: rules, counted, and the names of the
// chains to declare, which render writes (sorted) ahead of every rule.
type lines struct {
	buf    bytes.Buffer
	rules  int
	chains []string
}

// chain declares a chain: in iptables-restore --noflush this creates or flushes it.
func (l *lines) chain(name string) { l.chains = append(l.chains, name) }

// rule writes one rule from its words; words holding blanks are quoted.
func (l *lines) rule(words ...string) {
	for i, w := range words {
		if i > 0 {
			l.buf.WriteByte(' ')
		}
		l.buf.WriteString(w)
	}
	l.buf.WriteByte('\n')
	l.rules++
}

// comment returns the arguments of an iptables comment match, quoting like upstream.
func comment(text string) []string {
	if strings.ContainsAny(text, " \t") {
		text = `"` + text + `"`
	}
	return []string{"-m", "comment", "--comment", text}
}

// join flattens word groups into one argument list.
func join(groups ...[]string) []string {
	n := 0
	for _, g := range groups {
		n += len(g)
	}
	out := make([]string, 0, n)
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

// chunks is an append-only byte buffer kept as a list of blocks: growing it never
// copies what it holds, so a buffer of tens of megabytes never exists twice.
type chunks struct {
	blocks [][]byte
}

const chunkSize = 1 << 20

func (c *chunks) Write(p []byte) {
	for len(p) > 0 {
		if n := len(c.blocks); n == 0 || len(c.blocks[n-1]) == cap(c.blocks[n-1]) {
			c.blocks = append(c.blocks, make([]byte, 0, chunkSize))
		}
		last := &c.blocks[len(c.blocks)-1]
		k := min(cap(*last)-len(*last), len(p))
		*last = append(*last, p[:k]...)
		p = p[k:]
	}
}
