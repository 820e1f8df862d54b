package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// procChildren lists the children of pid, from every thread's children file (a Go
// program forks from whichever thread runs the exec).
func procChildren(pid int) []int {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// procArgs is a process's command line, the program as its base name; nil once it
// is gone.
func procArgs(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	args[0] = filepath.Base(args[0])
	return args
}

// isRuleWriter tells the programs that write a ruleset into the kernel: the IPv4
// iptables restore (iptables-nft-restore or iptables-legacy-restore, not ip6tables')
// and knftables' transaction, `nft -f -` (not `nft --check -f -`; kproxy syncs
// IPv4 before IPv6, so the first one seen is IPv4's).
func isRuleWriter(args []string) bool {
	if len(args) == 0 {
		return false
	}
	if strings.HasPrefix(args[0], "iptables") && strings.HasSuffix(args[0], "-restore") {
		return true // the IPv4 family's, which the test's Services are in
	}
	return args[0] == "nft" && len(args) == 3 && args[1] == "-f" && args[2] == "-"
}

// killPoint is when killMidSync strikes.
type killPoint int

const (
	// whileWriting: as soon as a rule writer runs (its input may still be streaming).
	whileWriting killPoint = iota
	// afterWriter: as soon as a rule writer that was seen has exited, while kproxy
	// goes on with the rest of the sync (nftables' first sync writes the set and map
	// elements over netlink after nft created the chains and maps).
	afterWriter
)

func (k killPoint) String() string {
	if k == whileWriting {
		return "while-writing"
	}
	return "after-writer"
}

// killReport is what killMidSync saw.
type killReport struct {
	writer   string        // the rule writer's command line
	afterRun time.Duration // from the kill request to the kill
	killed   []int         // children killed along with kproxy
}

// killMidSync polls kproxy's children every millisecond and, at point, SIGKILLs
// kproxy and then every child it has at that moment, as the kubelet killing the
// container's cgroup would (a child left alone would finish the write on its own).
// It fails if no rule writer shows up within timeout.
func killMidSync(p *cluster.Process, point killPoint, timeout time.Duration) (killReport, error) {
	start := time.Now()
	pid := p.Pid()
	// writers are the rule writers seen so far. A child's command line is read
	// afresh each time: between fork and exec it is still kproxy's.
	writers := map[int][]string{}
	for time.Since(start) < timeout {
		if !p.Running() {
			return killReport{}, fmt.Errorf("kproxy exited before it wrote any rules: %w", p.Exited())
		}
		alive := map[int]bool{}
		strike := ""
		for _, k := range procChildren(pid) {
			alive[k] = true
			if args := procArgs(k); isRuleWriter(args) {
				writers[k] = args
				if point == whileWriting {
					strike = strings.Join(args, " ")
				}
			}
		}
		if point == afterWriter {
			for k, args := range writers {
				if !alive[k] {
					strike = strings.Join(args, " ") + " (exited)"
				}
			}
		}
		if strike != "" {
			_ = p.Signal(syscall.SIGKILL)
			r := killReport{writer: strike, afterRun: time.Since(start)}
			for _, k := range procChildren(pid) {
				if syscall.Kill(k, syscall.SIGKILL) == nil {
					r.killed = append(r.killed, k)
				}
			}
			return r, waitGone(p, r.killed)
		}
		time.Sleep(time.Millisecond)
	}
	return killReport{}, fmt.Errorf("no rule writer (iptables-restore, nft -f -) among kproxy's children within %v", timeout)
}

// waitGone waits until kproxy and the killed children have exited, so that the
// kernel holds what the kill left and nothing more is written.
func waitGone(p *cluster.Process, kids []int) error {
	if err := p.Wait(30 * time.Second); err == nil || p.Running() {
		return fmt.Errorf("kproxy after SIGKILL: running %v, exit %w", p.Running(), err)
	}
	return cluster.WaitFor(func() error {
		for _, k := range kids {
			// A zombie (state Z) has exited; whoever inherited it may never reap it.
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", k))
			if _, rest, _ := strings.Cut(string(b), ") "); err == nil && !strings.HasPrefix(rest, "Z") {
				return fmt.Errorf("child %d of kproxy still runs", k)
			}
		}
		return nil
	}, 30*time.Second)
}
