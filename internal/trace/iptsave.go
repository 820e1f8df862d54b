package trace

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"

	"github.com/kproxy/kproxy/internal/iptables/words"
)

// iptDump is an iptables-save dump (or iptables-restore input): tables of chains.
type iptDump struct {
	tables map[string]*iptTable
}

type iptTable struct {
	name   string
	chains map[string]*iptChain
}

type iptChain struct {
	name string
	// policy is "ACCEPT" or "DROP" for built-in chains, "" for user chains.
	policy string
	rules  []*iptRule
}

// iptRule is one "-A" line, split into its matches and its target.
type iptRule struct {
	text       string // the line as written, for the trace path
	chain      string
	comment    string
	matches    []iptMatch
	target     string // "" for a rule without -j/-g
	isGoto     bool
	targetOpts []iptOpt
}

// iptMatch is one match module with its options ("" is the built-in matches: -s, -d,
// -p, -i, -o, -f).
type iptMatch struct {
	module string
	opts   []iptOpt
}

// iptOpt is one option: "--dport 80", "! --mark 0x4000/0x4000", "--rcheck".
type iptOpt struct {
	name string
	neg  bool
	vals []string
}

func (o iptOpt) val() string {
	if len(o.vals) == 0 {
		return ""
	}
	return o.vals[0]
}

// flagOptions take no value.
var flagOptions = map[string]bool{
	"--rcheck": true, "--update": true, "--set": true, "--remove": true, "--reap": true,
	"--rsource": true, "--rdest": true, "--rttl": true, "--random-fully": true, "--random": true,
	"--persistent": true, "-f": true, "--fragment": true, "--syn": true,
}

// parseIPTablesSave parses iptables-save output. Lines it does not understand are
// errors: a trace over a misread ruleset would be wrong without saying so.
func parseIPTablesSave(data []byte) (*iptDump, error) {
	d := &iptDump{tables: map[string]*iptTable{}}
	var t *iptTable
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1024*1024), 64*1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		// Counters from "iptables-save -c" precede the rule: "[12:345] -A ...".
		if strings.HasPrefix(line, "[") {
			if i := strings.Index(line, "] "); i > 0 {
				line = strings.TrimSpace(line[i+2:])
			}
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#") || line == "COMMIT":
		case strings.HasPrefix(line, "*"):
			name := line[1:]
			if name == "" {
				return nil, fmt.Errorf("iptables dump line %d: a table line without a name", n)
			}
			if t = d.tables[name]; t == nil {
				t = &iptTable{name: name, chains: map[string]*iptChain{}}
				d.tables[name] = t
			}
		case t == nil:
			return nil, fmt.Errorf("iptables dump line %d: %q comes before any table (*nat, *filter)", n, line)
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) == 0 {
				return nil, fmt.Errorf("iptables dump line %d (table %s): a chain line without a name", n, t.name)
			}
			c := t.chain(f[0])
			if len(f) > 1 && f[1] != "-" {
				c.policy = f[1]
			}
		case strings.HasPrefix(line, "-A ") || strings.HasPrefix(line, "-I "):
			r, err := parseIPTablesRule(line)
			if err != nil {
				return nil, fmt.Errorf("iptables dump line %d (table %s): %w", n, t.name, err)
			}
			c := t.chain(r.chain)
			if strings.HasPrefix(line, "-I ") {
				c.rules = append([]*iptRule{r}, c.rules...)
			} else {
				c.rules = append(c.rules, r)
			}
		case strings.HasPrefix(line, "-X ") || strings.HasPrefix(line, "-N ") || strings.HasPrefix(line, "-F"):
			// Restore-input chain management: the chain declarations already tell.
		default:
			return nil, fmt.Errorf("iptables dump line %d (table %s): cannot read %q", n, t.name, line)
		}
	}
	return d, sc.Err()
}

func (t *iptTable) chain(name string) *iptChain {
	c := t.chains[name]
	if c == nil {
		c = &iptChain{name: name}
		t.chains[name] = c
	}
	return c
}

// parseIPTablesRule splits "-A CHAIN ..." into matches and target.
func parseIPTablesRule(line string) (*iptRule, error) {
	toks, err := words.Split(line)
	if err != nil {
		return nil, fmt.Errorf("rule %q: %w", line, err)
	}
	if len(toks) < 2 {
		return nil, fmt.Errorf("rule %q has no chain", line)
	}
	r := &iptRule{text: line, chain: toks[1]}
	r.matches = append(r.matches, iptMatch{}) // the built-in matches
	curIdx := 0
	neg := false
	for i := 2; i < len(toks); i++ {
		tok := toks[i]
		switch tok {
		case "!":
			neg = true
			continue
		case "-m", "--match":
			if i+1 >= len(toks) {
				return nil, fmt.Errorf("rule %q: -m without a module", line)
			}
			i++
			r.matches = append(r.matches, iptMatch{module: toks[i]})
			curIdx = len(r.matches) - 1
			continue
		case "-j", "--jump", "-g", "--goto":
			if i+1 >= len(toks) {
				return nil, fmt.Errorf("rule %q: %s without a target", line, tok)
			}
			r.target = toks[i+1]
			r.isGoto = tok == "-g" || tok == "--goto"
			opts, err := parseOpts(toks[i+2:])
			if err != nil {
				return nil, fmt.Errorf("rule %q: %w", line, err)
			}
			r.targetOpts = opts
			i = len(toks)
			continue
		}
		if !strings.HasPrefix(tok, "-") {
			return nil, fmt.Errorf("rule %q: unexpected %q", line, tok)
		}
		o := iptOpt{name: tok, neg: neg}
		neg = false
		i = takeValues(toks, i, &o)
		if tok == "--comment" {
			r.comment = o.val()
		}
		// The built-in matches belong to no module, wherever they are written.
		switch tok {
		case "-s", "--source", "-d", "--destination", "-p", "--protocol", "-i", "--in-interface", "-o", "--out-interface", "-f", "--fragment":
			r.matches[0].opts = append(r.matches[0].opts, o)
		default:
			r.matches[curIdx].opts = append(r.matches[curIdx].opts, o)
		}
	}
	return r, nil
}

func parseOpts(toks []string) ([]iptOpt, error) {
	var out []iptOpt
	neg := false
	for i := 0; i < len(toks); i++ {
		if toks[i] == "!" {
			neg = true
			continue
		}
		if !strings.HasPrefix(toks[i], "-") {
			return nil, fmt.Errorf("unexpected %q after the target", toks[i])
		}
		o := iptOpt{name: toks[i], neg: neg}
		neg = false
		i = takeValues(toks, i, &o)
		out = append(out, o)
	}
	return out, nil
}

// takeValues gives option toks[i] its values and returns the index of the last one.
// Known flags take none; --comment takes exactly one (a comment may start with "-");
// other options take the following tokens up to the next option.
func takeValues(toks []string, i int, o *iptOpt) int {
	if flagOptions[o.name] {
		return i
	}
	if o.name == "--comment" {
		if i+1 < len(toks) {
			o.vals = []string{toks[i+1]}
			return i + 1
		}
		return i
	}
	for i+1 < len(toks) && toks[i+1] != "!" && !strings.HasPrefix(toks[i+1], "-") {
		i++
		o.vals = append(o.vals, toks[i])
	}
	return i
}
