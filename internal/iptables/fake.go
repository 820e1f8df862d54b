package iptables

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	restore "github.com/kproxy/kproxy/internal/iptables/words"
	"github.com/kproxy/kproxy/internal/model"
)

// Fake is an in-memory iptables of one family that holds tables, chains and rules and
// behaves like the kernel behind iptables-restore --noflush and iptables-save (1.8,
// nft and legacy flavours alike): each table of a restore input is one transaction,
// applied at its COMMIT or not at all; ":CHAIN" creates or flushes a chain (a
// built-in chain only gets its policy); rules are printed back as iptables-save prints
// them; and what the kernel refuses the fake refuses, with the input line: rules in or
// jumping to missing chains, deleting a chain that holds rules or is referenced, NAT
// and REJECT targets outside their table or reachable from a hook they cannot run in.
// The tables exist from the start with their built-in chains, as with
// iptables-legacy. It is safe for concurrent use. fake_kernel_test.go runs its tests
// against the real binaries.
type Fake struct {
	mu     sync.Mutex
	family model.Family
	tables map[string]*fakeTable
	// restores counts the restores run, for tests of what a sync costs.
	restores int
}

type fakeTable struct {
	name   string
	chains map[string]*fakeChain
}

type fakeChain struct {
	name    string
	builtin bool
	policy  string // "ACCEPT" or "DROP" for built-in chains
	rules   []fakeRule
}

// fakeRule is one rule: its text as iptables-save prints it after "-A CHAIN ", and
// its target, which the fake checks.
type fakeRule struct {
	text, target string
}

// builtinChains of each table, in the order iptables-save lists them.
var tableChains = map[string][]string{
	"filter":   {"INPUT", "FORWARD", "OUTPUT"},
	"nat":      {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"mangle":   {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	"raw":      {"PREROUTING", "OUTPUT"},
	"security": {"INPUT", "FORWARD", "OUTPUT"},
}

// NewFake returns an empty iptables of family f: every table with its built-in chains,
// policies ACCEPT.
func NewFake(f model.Family) *Fake {
	fk := &Fake{family: f, tables: map[string]*fakeTable{}}
	for name, builtins := range tableChains {
		t := &fakeTable{name: name, chains: map[string]*fakeChain{}}
		for _, c := range builtins {
			t.chains[c] = &fakeChain{name: c, builtin: true, policy: "ACCEPT"}
		}
		fk.tables[name] = t
	}
	return fk
}

var _ Runner = (*Fake)(nil)

func (t *fakeTable) clone() *fakeTable {
	c := &fakeTable{name: t.name, chains: make(map[string]*fakeChain, len(t.chains))}
	for n, ch := range t.chains {
		cc := *ch
		cc.rules = slices.Clone(ch.rules)
		c.chains[n] = &cc
	}
	return c
}

// Restore applies iptables-restore --noflush input. Tables committed before a failing
// line stay committed, as with the real one.
func (f *Fake) Restore(data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restores++
	var tx *fakeTable
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		n := i + 1
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			// "--counters" input may precede a rule with its counters.
			if j := strings.Index(line, "] "); j > 0 {
				line = strings.TrimSpace(line[j+2:])
			}
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			if tx != nil {
				return fmt.Errorf("iptables fake: line %d: table %s started before COMMIT of %s", n, line[1:], tx.name)
			}
			t := f.tables[line[1:]]
			if t == nil {
				return fmt.Errorf("iptables fake: line %d: no table %q", n, line[1:])
			}
			tx = t.clone()
		case tx == nil:
			return fmt.Errorf("iptables fake: line %d: %q outside a table", n, line)
		case line == "COMMIT":
			if err := tx.checkTargets(); err != nil {
				return fmt.Errorf("iptables fake: line %d (COMMIT of table %s): %w", n, tx.name, err)
			}
			f.tables[tx.name] = tx
			tx = nil
		case strings.HasPrefix(line, ":"):
			if err := tx.declare(line[1:]); err != nil {
				return fmt.Errorf("iptables fake: line %d: %w", n, err)
			}
		default:
			ws, err := restore.Split(line)
			if err == nil {
				err = f.command(tx, ws)
			}
			if err != nil {
				return fmt.Errorf("iptables fake: line %d (%s): %w", n, line, err)
			}
		}
	}
	if tx != nil {
		return fmt.Errorf("iptables fake: COMMIT expected at line %d (table %s)", len(lines), tx.name)
	}
	return nil
}

// declare applies ":CHAIN POLICY [counters]".
func (t *fakeTable) declare(decl string) error {
	f := strings.Fields(decl)
	if len(f) < 2 {
		return fmt.Errorf("chain declaration %q lacks a policy", decl)
	}
	name, policy := f[0], f[1]
	if c := t.chains[name]; c != nil && c.builtin {
		if policy != "ACCEPT" && policy != "DROP" {
			return fmt.Errorf("built-in chain %s: bad policy %q", name, policy)
		}
		c.policy = policy // a built-in chain is not flushed by its declaration
		return nil
	}
	if policy != "-" {
		return fmt.Errorf("user chain %s cannot have policy %s", name, policy)
	}
	if c := t.chains[name]; c != nil {
		c.rules = nil
		return nil
	}
	t.chains[name] = &fakeChain{name: name}
	return nil
}

// command applies one command ("-A CHAIN ...", "-X CHAIN", ...) to a table.
func (f *Fake) command(t *fakeTable, w []string) error {
	if len(w) == 0 {
		return nil
	}
	cmd, args := w[0], w[1:]
	chainArg := func() (*fakeChain, error) {
		if len(args) == 0 {
			return nil, fmt.Errorf("%s needs a chain", cmd)
		}
		c := t.chains[args[0]]
		if c == nil {
			return nil, fmt.Errorf("chain %s: %w", args[0], ErrNotFound)
		}
		return c, nil
	}
	switch cmd {
	case "-A", "--append", "-I", "--insert", "-D", "--delete", "-C", "--check", "-R", "--replace":
		c, err := chainArg()
		if err != nil {
			return err
		}
		return f.ruleCommand(t, c, cmd, args[1:])
	case "-N", "--new-chain":
		if len(args) != 1 {
			return fmt.Errorf("-N needs one chain name")
		}
		if t.chains[args[0]] != nil {
			return fmt.Errorf("chain %s already exists", args[0])
		}
		t.chains[args[0]] = &fakeChain{name: args[0]}
	case "-X", "--delete-chain":
		if len(args) == 0 {
			for _, c := range t.userChains() {
				if err := t.deleteChain(c.name); err != nil {
					return err
				}
			}
			return nil
		}
		return t.deleteChain(args[0])
	case "-F", "--flush":
		if len(args) == 0 {
			for _, c := range t.chains {
				c.rules = nil
			}
			return nil
		}
		c, err := chainArg()
		if err != nil {
			return err
		}
		c.rules = nil
	case "-P", "--policy":
		c, err := chainArg()
		if err != nil {
			return err
		}
		if !c.builtin || len(args) != 2 || (args[1] != "ACCEPT" && args[1] != "DROP") {
			return fmt.Errorf("bad policy command %q", strings.Join(w, " "))
		}
		c.policy = args[1]
	case "-Z", "--zero":
	default:
		return fmt.Errorf("command %s is not understood by the iptables fake", cmd)
	}
	return nil
}

// ruleCommand applies -A, -I [N], -D (rule or number), -C and -R N to chain c.
func (f *Fake) ruleCommand(t *fakeTable, c *fakeChain, cmd string, w []string) error {
	pos := -1
	if len(w) > 0 && !strings.HasPrefix(w[0], "-") && w[0] != "!" {
		if _, err := fmt.Sscanf(w[0], "%d", &pos); err != nil || pos < 1 {
			return fmt.Errorf("bad rule number %q", w[0])
		}
		w = w[1:]
	}
	if (cmd == "-D" || cmd == "--delete") && pos > 0 && len(w) == 0 {
		if pos > len(c.rules) {
			return fmt.Errorf("rule %d of chain %s: %w", pos, c.name, ErrNotFound)
		}
		c.rules = slices.Delete(c.rules, pos-1, pos)
		return nil
	}
	spec, err := parseRuleSpec(f.family, w)
	if err != nil {
		return err
	}
	r := fakeRule{text: spec.String(f.family), target: spec.target}
	if err := t.checkTarget(spec); err != nil {
		return err
	}
	switch cmd {
	case "-A", "--append":
		c.rules = append(c.rules, r)
	case "-I", "--insert":
		if pos < 0 {
			pos = 1
		}
		if pos > len(c.rules)+1 {
			return fmt.Errorf("index of insertion %d too big for chain %s", pos, c.name)
		}
		c.rules = slices.Insert(c.rules, pos-1, r)
	case "-R", "--replace":
		if pos < 1 || pos > len(c.rules) {
			return fmt.Errorf("rule %d of chain %s: %w", pos, c.name, ErrNotFound)
		}
		c.rules[pos-1] = r
	default: // -D, -C
		i := slices.IndexFunc(c.rules, func(x fakeRule) bool { return x.text == r.text })
		if i < 0 {
			return fmt.Errorf("bad rule (does a matching rule exist in chain %s?): %w", c.name, ErrNotFound)
		}
		if cmd == "-D" || cmd == "--delete" {
			c.rules = slices.Delete(c.rules, i, i+1)
		}
	}
	return nil
}

// checkTarget refuses a target that is neither a known target valid in the table nor
// an existing user chain, as iptables does when it reads the line.
func (t *fakeTable) checkTarget(r *ruleSpec) error {
	if r.target == "" {
		return nil
	}
	if c := t.chains[r.target]; c != nil {
		if c.builtin {
			return fmt.Errorf("cannot jump to built-in chain %s", r.target)
		}
		return nil
	}
	tt, known := targetTables[r.target]
	if !known {
		return fmt.Errorf("chain %q does not exist", r.target)
	}
	if len(tt) > 0 && !slices.Contains(tt, t.name) {
		return fmt.Errorf("target %s is not valid in table %s", r.target, t.name)
	}
	return nil
}

// targetTables are the targets the fake knows, with the tables they are valid in (nil:
// any table).
var targetTables = map[string][]string{
	"ACCEPT": nil, "DROP": nil, "RETURN": nil, "QUEUE": nil, "MARK": nil, "CONNMARK": nil,
	"LOG": nil, "NFLOG": nil, "TRACE": nil, "CT": {"raw"}, "NOTRACK": {"raw"},
	"DNAT": {"nat"}, "SNAT": {"nat"}, "MASQUERADE": {"nat"}, "REDIRECT": {"nat"},
	"REJECT": {"filter"},
}

// targetHooks are the built-in chains from which targets that are restricted to some
// hooks may be reached.
var targetHooks = map[string][]string{
	"DNAT": {"PREROUTING", "OUTPUT"}, "REDIRECT": {"PREROUTING", "OUTPUT"},
	"SNAT": {"POSTROUTING", "INPUT"}, "MASQUERADE": {"POSTROUTING"},
	"REJECT": {"INPUT", "FORWARD", "OUTPUT"},
}

// checkTargets refuses a table where a hook-restricted target can be reached from a
// built-in chain it may not run in, as the kernel refuses at commit.
func (t *fakeTable) checkTargets() error {
	for _, b := range tableChains[t.name] {
		seen := map[string]bool{}
		var walk func(c *fakeChain) error
		walk = func(c *fakeChain) error {
			if seen[c.name] {
				return nil
			}
			seen[c.name] = true
			for _, r := range c.rules {
				if hooks, ok := targetHooks[r.target]; ok && !slices.Contains(hooks, b) {
					return fmt.Errorf("rule %q of chain %s: target %s cannot be reached from %s", r.text, c.name, r.target, b)
				}
				if sub := t.chains[r.target]; sub != nil && !sub.builtin {
					if err := walk(sub); err != nil {
						return err
					}
				}
			}
			return nil
		}
		if err := walk(t.chains[b]); err != nil {
			return err
		}
	}
	return nil
}

// deleteChain applies -X: the chain must exist, be a user chain, hold no rules and be
// referenced by no rule.
func (t *fakeTable) deleteChain(name string) error {
	c := t.chains[name]
	switch {
	case c == nil:
		return fmt.Errorf("deleting chain %s: %w", name, ErrNotFound)
	case c.builtin:
		return fmt.Errorf("cannot delete built-in chain %s", name)
	case len(c.rules) > 0:
		return fmt.Errorf("cannot delete chain %s: it holds %d rules", name, len(c.rules))
	}
	for _, o := range t.chains {
		for _, r := range o.rules {
			if r.target == name {
				return fmt.Errorf("cannot delete chain %s: rule %q of chain %s refers to it", name, r.text, o.name)
			}
		}
	}
	delete(t.chains, name)
	return nil
}

// userChains are the table's user chains, in name order.
func (t *fakeTable) userChains() []*fakeChain {
	var out []*fakeChain
	for _, c := range t.chains {
		if !c.builtin {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Save returns the table as iptables-save -t table prints it: the built-in chains with
// their policies, the user chains in name order, then every chain's rules in that
// order. Counters are zero.
func (f *Fake) Save(table string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.tables[table]
	if t == nil {
		return nil, fmt.Errorf("iptables fake: no table %q", table)
	}
	var b bytes.Buffer
	order := make([]*fakeChain, 0, len(t.chains))
	for _, name := range tableChains[table] {
		order = append(order, t.chains[name])
	}
	order = append(order, t.userChains()...)
	b.WriteString("*" + table + "\n")
	for _, c := range order {
		policy := c.policy
		if !c.builtin {
			policy = "-"
		}
		fmt.Fprintf(&b, ":%s %s [0:0]\n", c.name, policy)
	}
	for _, c := range order {
		for _, r := range c.rules {
			fmt.Fprintf(&b, "-A %s %s\n", c.name, r.text)
		}
	}
	b.WriteString("COMMIT\n")
	return b.Bytes(), nil
}

// SaveSkeleton is the skeleton of Save's output (see inSkeleton).
func (f *Fake) SaveSkeleton(table string) ([]byte, error) {
	save, err := f.Save(table)
	if err != nil {
		return nil, err
	}
	return skeletonOf(save), nil
}

// ChainsFlushed looks at every probe.
func (f *Fake) ChainsFlushed(probes []ChainProbe) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range probes {
		t := f.tables[p.Table]
		c := t.chains[p.Chain]
		if c == nil || (p.NeedsRules && len(c.rules) == 0) {
			return true
		}
	}
	return false
}

// Run runs one iptables command: "[-w N] [-t table] COMMAND ...", with -S CHAIN
// telling whether the chain exists. Errors for a missing chain or rule wrap
// ErrNotFound, as the real one exits with status 1.
func (f *Fake) Run(args ...string) error {
	table := "filter"
	for len(args) > 0 {
		switch args[0] {
		case "-w", "--wait":
			args = args[2:]
			continue
		case "-t", "--table":
			if len(args) < 2 {
				return fmt.Errorf("iptables fake: -t without a table")
			}
			table, args = args[1], args[2:]
			continue
		}
		break
	}
	if len(args) == 0 {
		return fmt.Errorf("iptables fake: no command")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.tables[table]
	if t == nil {
		return fmt.Errorf("iptables fake: no table %q", table)
	}
	if args[0] == "-S" || args[0] == "--list-rules" {
		if len(args) > 1 && t.chains[args[1]] == nil {
			return fmt.Errorf("iptables fake: -t %s -S %s: %w", table, args[1], ErrNotFound)
		}
		return nil
	}
	tx := t.clone()
	if err := f.command(tx, args); err != nil {
		return fmt.Errorf("iptables fake: -t %s %s: %w", table, strings.Join(args, " "), err)
	}
	if err := tx.checkTargets(); err != nil {
		return fmt.Errorf("iptables fake: -t %s %s: %w", table, strings.Join(args, " "), err)
	}
	f.tables[table] = tx
	return nil
}

// Rules returns the rules of one chain as iptables-save prints them ("-A CHAIN ..."),
// and whether the chain exists.
func (f *Fake) Rules(table, chain string) ([]string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.tables[table].chains[chain]
	if c == nil {
		return nil, false
	}
	out := make([]string, len(c.rules))
	for i, r := range c.rules {
		out[i] = "-A " + chain + " " + r.text
	}
	return out, true
}

// Restores is the number of restores run so far, failed ones included.
func (f *Fake) Restores() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restores
}
