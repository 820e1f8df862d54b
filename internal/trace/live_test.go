package trace

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kproxy/kproxy/internal/iptables/words"
)

// These tests load rulesets into a real kernel, in a network namespace of their own,
// and trace packets through what iptables-save / nft print there: the parsers meet
// the kernel's own formatting (-d 172.30.0.41/32, --set-xmark, nft's JSON).

// netnsFixture creates a namespace whose interfaces hold the fixture's node addresses
// (on a veth pair that stays inside it: the kernel may lack the dummy driver).
func netnsFixture(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command")
	}
	name := fmt.Sprintf("ktrace-%d", os.Getpid())
	run(t, "", "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, name, "ip", "link", "set", "lo", "up")
	run(t, name, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	run(t, name, "ip", "link", "set", "eth0", "up")
	for _, a := range []string{"192.168.0.2/24", "192.168.1.2/24", "192.168.99.11/24"} {
		run(t, name, "ip", "addr", "add", a, "dev", "eth0")
	}
	return name
}

func run(t *testing.T, ns string, args ...string) {
	t.Helper()
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func runStdin(t *testing.T, ns, stdin string, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inNetns runs f on a thread switched into the namespace; commands it starts
// (iptables-save, nft) inherit the namespace.
func inNetns(t *testing.T, ns string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() { _ = orig.Close() }()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() { _ = target.Close() }()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() {
		// A thread that cannot go back stays locked, and Go discards it.
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	f()
}

// liveCases run in the namespace; the interfaces' addresses are the local ones.
func runLive(t *testing.T, ns, mode string, cases []flowCase) {
	t.Helper()
	inNetns(t, ns, func() {
		for _, c := range cases {
			r, err := Run(context.Background(), Options{Packet: c.packet(t), Mode: ModeAuto})
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if r.Mode != mode {
				t.Errorf("%s: mode %s detected, want %s", c.name, r.Mode, mode)
			}
			for _, n := range r.Notes {
				if strings.Contains(n, "not understood") || strings.Contains(n, "assumed") {
					t.Errorf("%s: the live ruleset was not fully understood: %s", c.name, n)
				}
			}
			c.check(t, r)
		}
	})
}

func TestLiveIPTables(t *testing.T) {
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		t.Skip("needs iptables-restore")
	}
	ns := netnsFixture(t)
	// kproxy's ruleset for the reference 2.5 setup, plus an affinity Service and an
	// LB with source ranges, and the jump rules from the built-in chains.
	runStdin(t, ns, string(referenceWorldRuleset()), "iptables-restore", "--noflush")
	for _, table := range []string{"nat", "filter"} {
		for _, line := range standardJumps[table] {
			args, err := words.Split(line)
			if err != nil {
				t.Fatal(err)
			}
			run(t, ns, append([]string{"iptables", "-w", "-t", table}, args...)...)
		}
	}
	runLive(t, ns, ModeIPTables, append(referenceWorldCases(),
		// The node's own NodePort, from its address and from 127.0.0.1.
		flowCase{name: "live node to NodePort", from: FromNode, src: "192.168.0.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT,
			endpoints: []string{"10.180.0.3:8080", "10.180.1.3:8080"}, masq: true},
		flowCase{name: "live localhost NodePort", from: FromNode, src: "127.0.0.1", dst: "127.0.0.1:3001", verdict: VerdictDNAT,
			endpoints: []string{"10.180.0.3:8080", "10.180.1.3:8080"}, masq: true},
	))
}

func TestLiveNFTables(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft")
	}
	ns := netnsFixture(t)
	run(t, ns, "nft", "-f", "testdata/nft-reference.nft")
	runLive(t, ns, ModeNFTables, nftReferenceCases)
}

// TestLiveNFTablesEndpointMap traces kproxy's own dispatch, an interval map keyed on
// numgen, read back from the kernel: each endpoint weighs the share of the numgen range
// its interval covers.
func TestLiveNFTablesEndpointMap(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft")
	}
	ns := netnsFixture(t)
	run(t, ns, "nft", "-f", "testdata/nft-endpoint-map.nft")
	inNetns(t, ns, func() {
		p := flowCase{from: FromNode, src: "192.168.0.2", dst: "172.30.0.50:80"}.packet(t)
		r, err := Run(context.Background(), Options{Packet: p, Mode: ModeNFTables})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]float64{
			"10.180.0.1:8080": 26214.0 / 65536, "10.180.0.2:8080": 26214.0 / 65536, "10.180.0.3:8080": 13008.0 / 65536,
		}
		if len(r.Endpoints) != len(want) {
			t.Fatalf("endpoints %v, want %v\n%s", r.Endpoints, want, text(r))
		}
		for _, e := range r.Endpoints {
			if w, ok := want[e.Address]; !ok || math.Abs(e.Probability-w) > 1e-6 { // Result rounds to 6 places
				t.Errorf("endpoint %s probability %v, want %v", e.Address, e.Probability, w)
			}
		}
		gap := false
		for _, n := range r.Notes {
			gap = gap || strings.Contains(n, "100 of the 65536 numgen values have no map element")
		}
		if !gap {
			t.Errorf("no note on the 100 values without an element; notes: %v", r.Notes)
		}
	})
}
