package iptables

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// nsRunner runs the iptables-nft binaries inside a network namespace.
type nsRunner struct{ ns string }

func (r nsRunner) cmd(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", r.ns, name}, args...)...)
}

func (r nsRunner) Restore(data []byte) error {
	c := r.cmd("iptables-nft-restore", "-w", "5", "--noflush")
	c.Stdin = bytes.NewReader(data)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("restore: %w: %s", err, out)
	}
	return nil
}

func (r nsRunner) Save(table string) ([]byte, error) {
	return r.cmd("iptables-nft-save", "-t", table).Output()
}

func (r nsRunner) Run(args ...string) error {
	if out, err := r.cmd("iptables-nft", append([]string{"-w", "5"}, args...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

func (r nsRunner) SaveSkeleton(table string) ([]byte, error) {
	save, err := r.Save(table)
	return skeletonOf(save), err
}

// ChainsFlushed asks iptables-nft -S for every probe.
func (r nsRunner) ChainsFlushed(probes []ChainProbe) bool {
	for _, p := range probes {
		out, err := r.cmd("iptables-nft", "-w", "5", "-t", p.Table, "-S", p.Chain).Output()
		if err != nil || (p.NeedsRules && !strings.Contains(string(out), "-A ")) {
			return true
		}
	}
	return false
}

// cleanupNetns creates a network namespace for the test (deleted when it ends) and
// returns a runner of the iptables-nft binaries in it.
func cleanupNetns(t *testing.T, name string) nsRunner {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	if _, err := exec.LookPath("iptables-nft-restore"); err != nil {
		t.Skip("iptables-nft-restore is not installed")
	}
	ns := fmt.Sprintf("%s%d", name, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ensureNFAcct(t, ns)
	return nsRunner{ns: ns}
}

// assertNoKubeRules fails if any table still holds a KUBE- chain or rule.
func assertNoKubeRules(t *testing.T, r nsRunner) {
	t.Helper()
	for _, table := range []string{"nat", "filter", "mangle"} {
		save, err := r.Save(table)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(save), "KUBE-") {
			t.Errorf("after cleanup %s still has:\n%s", table, save)
		}
	}
}

// The dispatch tree's chains reference the KUBE-SVC chains, so cleanup must delete
// them too or the kernel refuses to delete the rest.
func TestCleanupRemovesTheDispatchTree(t *testing.T) {
	r := cleanupNetns(t, "kpclean")

	snap, _ := manyServices(300)
	rs := Build(BuildInput{Params: referenceParams(), Snapshot: snap, JumpRules: missingJumps(jumpRules(true), nil)})
	if err := r.Restore(rs.Data()); err != nil {
		t.Fatal(err)
	}
	save, _ := r.Save("nat")
	if !strings.Contains(string(save), ":KUBE-SVCT-R") {
		t.Fatalf("the ruleset has no dispatch tree")
	}
	if err := Cleanup(r); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	assertNoKubeRules(t, r)
}

// countingRunner counts the single-rule iptables runs Cleanup makes.
type countingRunner struct {
	nsRunner
	runs *int
}

func (r countingRunner) Run(args ...string) error {
	*r.runs++
	return r.nsRunner.Run(args...)
}

// Jump rules, even one inserted twice, go in the same restore as the chains: no
// "iptables -D" per rule, each of which loads the whole table.
func TestCleanupDeletesJumpsInOneRestore(t *testing.T) {
	runs := 0
	r := countingRunner{cleanupNetns(t, "kpclean2"), &runs}

	snap, _ := manyServices(20)
	rs := Build(BuildInput{Params: referenceParams(), Snapshot: snap, JumpRules: missingJumps(jumpRules(true), nil)})
	if err := r.Restore(rs.Data()); err != nil {
		t.Fatal(err)
	}
	if err := r.nsRunner.Run("-t", "nat", "-I", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(r); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	if runs != 0 {
		t.Errorf("cleanup ran iptables %d times; want every deletion in the restores", runs)
	}
	assertNoKubeRules(t, r.nsRunner)
}
