package iptables

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/kproxy/kproxy/internal/model"
)

// Runner is what the iptables backend asks of one family's iptables, and all it asks:
// the seam between the backend and the kernel. NewRunner's drives the real binaries
// (and netlink where that is cheaper); Fake holds the tables in memory.
type Runner interface {
	// Restore feeds data to iptables-restore --noflush: each table is one transaction.
	Restore(data []byte) error
	// Save returns iptables-save's output for one table.
	Save(table string) ([]byte, error)
	// Run runs the iptables command with the given arguments. When the rule or chain
	// it names does not exist (exit status 1) the error wraps ErrNotFound.
	Run(args ...string) error
	// SaveSkeleton returns the skeleton of one table (see inSkeleton) as iptables-save
	// lines: what a full sync needs to know of the kernel, without the cost of a whole
	// dump.
	SaveSkeleton(table string) ([]byte, error)
	// ChainsFlushed reports whether a probe's chain is missing, or empty where the
	// probe needs rules: kproxy's rules were removed behind its back. Where each look
	// loads a whole table, an implementation may look only at the first probe of each
	// table; where it cannot tell (a held lock), it reports false.
	ChainsFlushed(probes []ChainProbe) bool
}

// ErrNotFound is wrapped by Runner.Run's error when the rule or chain it names does not
// exist: iptables exits with status 1.
var ErrNotFound = errors.New("no such rule or chain")

// execRunner runs the real binaries of one family and flavour.
type execRunner struct {
	family                  model.Family
	flavour                 Flavour
	iptables, restore, save string
}

// NewRunner returns a Runner for the family's binaries in the node's flavour
// (Detected): iptables-nft or iptables-legacy, never the "iptables" alternative,
// which may point at the other one.
func NewRunner(f model.Family) Runner { return NewFlavourRunner(f, Detected()) }

// NewFlavourRunner returns a Runner for the family's binaries of the given flavour.
func NewFlavourRunner(f model.Family, fl Flavour) Runner {
	b := BinariesFor(f, fl)
	return &execRunner{family: f, flavour: fl, iptables: b.IPTables, restore: b.Restore, save: b.Save}
}

func (r *execRunner) Restore(data []byte) error {
	return r.RestoreInput(Input{data})
}

// RestoreInput streams the input to iptables-restore from its pieces (see Input).
func (r *execRunner) RestoreInput(in Input) error {
	cmd := exec.Command(r.restore, "-w", "5", "--noflush", "--counters")
	cmd.Stdin = in.Reader()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s%s", r.restore, err, strings.TrimSpace(string(out)), restoreErrorContext(out, in.Bytes()))
	}
	return nil
}

func (r *execRunner) Save(table string) ([]byte, error) {
	out, err := exec.Command(r.save, "-t", table).Output()
	if err != nil {
		return nil, fmt.Errorf("%s -t %s: %w", r.save, table, err)
	}
	return out, nil
}

func (r *execRunner) Run(args ...string) error {
	out, err := exec.Command(r.iptables, append([]string{"-w", "5"}, args...)...).CombinedOutput()
	if err != nil {
		if isExitStatus1(err) {
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return fmt.Errorf("%s %s: %w: %s", r.iptables, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// restoreErrorContext quotes the input line iptables-restore complains about
// ("line 42 failed"), so the log says which rule was refused.
func restoreErrorContext(out, data []byte) string {
	var n int
	idx := bytes.Index(out, []byte("line "))
	if idx < 0 {
		return ""
	}
	if _, err := fmt.Sscanf(string(out[idx:]), "line %d", &n); err != nil || n <= 0 {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for i := 1; sc.Scan(); i++ {
		if i == n {
			return fmt.Sprintf(" (input line %d: %s)", n, sc.Text())
		}
	}
	return ""
}

// chainsIn lists the chain names that iptables-save output declares.
func chainsIn(save []byte) []string {
	var out []string
	for _, line := range bytes.Split(save, []byte("\n")) {
		if len(line) > 1 && line[0] == ':' {
			if f := bytes.Fields(line[1:]); len(f) > 0 {
				out = append(out, string(f[0]))
			}
		}
	}
	return out
}
