package iptables

import (
	"bytes"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/kproxy/kproxy/internal/model"
)

// The real runner streams a full ruleset held in pieces (the per-port chains fill
// several blocks, and lines run across their ends) to iptables-restore, which then
// holds every rule of it.
func TestExecRunnerStreamsRulesetInPieces(t *testing.T) {
	ns := cleanupNetns(t, "kpstream")
	snap, _ := manyServices(2500)
	rs := Build(BuildInput{Params: referenceParams(), Snapshot: snap, JumpRules: missingJumps(jumpRules(true), nil)})
	cut := false
	for _, p := range rs.Input {
		cut = cut || p[len(p)-1] != '\n'
	}
	if !cut {
		t.Fatalf("test setup: none of the %d pieces ends inside a line", len(rs.Input))
	}

	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	h, err := netns.GetFromName(ns.ns)
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(h); err != nil {
		t.Fatalf("entering netns %s: %v", ns.ns, err)
	}
	err = NewFlavourRunner(model.IPv4, FlavourNFT).(inputRestorer).RestoreInput(rs.Input)
	// If the thread cannot go back, leave it locked: Go then discards it.
	if netns.Set(orig) == nil {
		runtime.UnlockOSThread()
	}
	if err != nil {
		t.Fatalf("restore of %d bytes in %d pieces: %v", rs.Input.Len(), len(rs.Input), err)
	}

	saved, err := ns.Save("nat")
	if err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"-A KUBE-SEP-", "-A KUBE-SVC-", "-A KUBE-SVCT-"} {
		want, got := countLines(rs.Data(), prefix), countLines(saved, prefix)
		if want == 0 || got != want {
			t.Errorf("%q rules: %d in the kernel, %d in the input", prefix, got, want)
		}
	}
}

func countLines(data []byte, prefix string) int {
	n := 0
	for _, line := range bytes.Split(data, []byte("\n")) {
		if bytes.HasPrefix(line, []byte(prefix)) {
			n++
		}
	}
	return n
}
