package iptables

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/proxytest"
)

// binRunner runs one family's binaries of one flavour inside a network namespace.
type binRunner struct {
	ns  string
	bin Binaries
}

func (r binRunner) cmd(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", r.ns, name}, args...)...)
}

func (r binRunner) Restore(data []byte) error {
	c := r.cmd(r.bin.Restore, "-w", "5", "--noflush", "--counters")
	c.Stdin = bytes.NewReader(data)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", r.bin.Restore, err, out)
	}
	return nil
}

func (r binRunner) Save(table string) ([]byte, error) {
	return r.cmd(r.bin.Save, "-t", table).Output()
}

func (r binRunner) Run(args ...string) error {
	if out, err := r.cmd(r.bin.IPTables, append([]string{"-w", "5"}, args...)...).CombinedOutput(); err != nil {
		if isExitStatus1(err) {
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

func (r binRunner) SaveSkeleton(table string) ([]byte, error) {
	save, err := r.Save(table)
	return skeletonOf(save), err
}

func (r binRunner) ChainsFlushed([]ChainProbe) bool { panic("not used") }

// kernelFlavours are the flavours whose binaries are installed, each with a fresh
// network namespace per call of newNS (deleted when the test ends).
func kernelFlavours(t *testing.T) []Flavour {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	var out []Flavour
	for _, fl := range []Flavour{FlavourNFT, FlavourLegacy} {
		if _, err := exec.LookPath(BinariesFor(model.IPv4, fl).Restore); err == nil {
			out = append(out, fl)
		}
	}
	if len(out) == 0 {
		t.Skip("no iptables-restore installed")
	}
	return out
}

var nsSerial int

func newNS(t *testing.T) string {
	t.Helper()
	nsSerial++
	ns := fmt.Sprintf("kp-seams-fake-%d-%d", os.Getpid(), nsSerial)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	return ns
}

// The fake's expectations are the kernel's: every case, on the real binaries of each
// installed flavour.
func TestFakeCasesOnTheKernel(t *testing.T) {
	for _, fl := range kernelFlavours(t) {
		for _, c := range fakeCases {
			t.Run(string(fl)+"/"+c.name, func(t *testing.T) {
				f := c.family
				if f == 0 {
					f = model.IPv4
				}
				r := binRunner{ns: newNS(t), bin: BinariesFor(f, fl)}
				runFakeCase(t, c, r, func(err error) bool { return errors.Is(err, ErrNotFound) })
			})
		}
	}
}

// restoreBoth applies the same input to the fake and the kernel and wants the same
// outcome and the same tables, byte for byte (without "#" lines); it returns the
// fake's error.
func restoreBoth(t *testing.T, what string, fk *Fake, r binRunner, data []byte, tables ...string) error {
	t.Helper()
	errF, errK := fk.Restore(data), r.Restore(data)
	if (errF == nil) != (errK == nil) {
		t.Fatalf("%s: fake error %v, kernel error %v", what, errF, errK)
	}
	for _, table := range tables {
		a, _ := fk.Save(table)
		b, err := r.Save(table)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := normalizeSave(string(a), table), normalizeSave(string(b), table); got != want {
			t.Errorf("%s: table %s differs:\n%s", what, table, lineDiff(got, want))
		}
	}
	return errF
}

// lineDiff lists the lines only the fake has ("fake:") and only the kernel has.
func lineDiff(fake, kernel string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	f, k := in(fake), in(kernel)
	var out []string
	for _, l := range strings.Split(fake, "\n") {
		if !k[l] {
			out = append(out, "fake:   "+l)
		}
	}
	for _, l := range strings.Split(kernel, "\n") {
		if !f[l] {
			out = append(out, "kernel: "+l)
		}
	}
	if len(out) == 0 {
		return "(same lines, in another order)"
	}
	return strings.Join(out, "\n")
}

// teeRunner applies every restore to the fake and to the kernel, and wants the same
// outcome and tables from both; everything else the fake answers.
type teeRunner struct {
	*Fake
	t      *testing.T
	kernel binRunner
	step   string
}

func (r *teeRunner) Restore(data []byte) error {
	r.t.Helper()
	return restoreBoth(r.t, r.step, r.Fake, r.kernel, data, "filter", "nat", "mangle")
}

// kproxy's own rulesets, full and partial, leave the fake's tables as they leave the
// kernel's, byte for byte: the fake's save is what the tracer tests read.
func TestWorldsFakeMatchesTheKernel(t *testing.T) {
	for _, fl := range kernelFlavours(t) {
		for _, tr := range proxytest.Transitions() {
			from, to := tr[0], tr[1]
			t.Run(string(fl)+"/"+from.Name+"-to-"+to.Name, func(t *testing.T) {
				tee := &teeRunner{Fake: NewFake(model.IPv4), t: t, kernel: binRunner{ns: newNS(t), bin: BinariesFor(model.IPv4, fl)}}
				px := NewProxier(worldParams(), tee, noSysctl, newMetrics(t))
				tracker := model.NewTracker(proxytest.NodeName, nil, nil)
				proxytest.Feed(tracker, from)
				tee.step = "full sync of " + from.Name
				if err := px.Sync(t.Context(), proxytest.Snapshot(tracker), true); err != nil {
					t.Fatal(err)
				}
				proxytest.Transition(tracker, from, to)
				tee.step = "partial sync to " + to.Name
				if err := px.Sync(t.Context(), proxytest.Snapshot(tracker), false); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
