package iptables

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kproxy/kproxy/internal/model"
)

// fakeSaves answers "name args..." with canned output; anything else fails, like a
// binary that is not installed.
// DetectFlavourFast runs two at a time, so the fake locks.
func fakeSaves(outputs map[string]string) (CommandOutput, *[]string) {
	var calls []string
	var mu sync.Mutex
	return func(name string, args ...string) ([]byte, error) {
		key := strings.TrimSpace(name + " " + strings.Join(args, " "))
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, key)
		if out, ok := outputs[key]; ok {
			return []byte(out), nil
		}
		return nil, errors.New("not installed")
	}, &calls
}

const (
	mangleWithHint = "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"
	mangleCanary   = "*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n"
	// A chain that merely starts like a kubelet chain must not count.
	mangleLookalike = "*mangle\n:KUBE-IPTABLES-HINTS - [0:0]\nCOMMIT\n"
	twoRules        = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n-A INPUT -j DROP\nCOMMIT\n"
	oneRule         = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n"
)

func TestDetectFlavour(t *testing.T) {
	cases := []struct {
		name    string
		outputs map[string]string
		want    Flavour
	}{
		{"nothing installed defaults to nft", nil, FlavourNFT},
		{"hint in nft mangle", map[string]string{"iptables-nft-save -t mangle": mangleWithHint}, FlavourNFT},
		{"kubelet canary in nft ip6 mangle", map[string]string{"ip6tables-nft-save -t mangle": mangleCanary, "iptables-legacy-save": twoRules}, FlavourNFT},
		{"nft hint wins over legacy hint", map[string]string{"iptables-nft-save -t mangle": mangleWithHint, "iptables-legacy-save": mangleWithHint}, FlavourNFT},
		{"hint in legacy", map[string]string{"iptables-legacy-save": mangleCanary, "iptables-nft-save": twoRules}, FlavourLegacy},
		{"hint in ip6 legacy", map[string]string{"ip6tables-legacy-save": mangleWithHint}, FlavourLegacy},
		{"lookalike chain is no hint", map[string]string{"iptables-nft-save -t mangle": mangleLookalike}, FlavourNFT},
		{"more legacy rules", map[string]string{"iptables-legacy-save": twoRules, "iptables-nft-save": oneRule}, FlavourLegacy},
		{"as many rules in each: nft", map[string]string{"iptables-legacy-save": oneRule, "ip6tables-nft-save": oneRule}, FlavourNFT},
		{"more nft rules", map[string]string{"iptables-legacy-save": oneRule, "iptables-nft-save": twoRules}, FlavourNFT},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, calls := fakeSaves(tc.outputs)
			got, why := DetectFlavour(out)
			if got != tc.want {
				t.Errorf("DetectFlavour = %s (%s), want %s; commands run: %v", got, why, tc.want, *calls)
			}
			// With the legacy table lists saying which families have tables, the
			// fast form must decide the same.
			tables := map[string]string{}
			for i, save := range []string{"iptables-legacy-save", "ip6tables-legacy-save"} {
				if _, ok := tc.outputs[save]; ok {
					tables[legacyTableFiles[i]] = "filter\nmangle\n"
				}
			}
			fastOut, fastCalls := fakeSaves(tc.outputs)
			if fast, why := DetectFlavourFast(fastOut, fakeFiles(tables)); fast != tc.want {
				t.Errorf("DetectFlavourFast = %s (%s), want %s; commands run: %v", fast, why, tc.want, *fastCalls)
			}
			if why == "" {
				t.Error("DetectFlavour gave no reason")
			}
			for _, c := range *calls {
				if strings.HasPrefix(c, "iptables-legacy-save -t") || strings.HasPrefix(c, "ip6tables-legacy-save -t") {
					t.Errorf("ran %q: -t makes the legacy kernel module create the table", c)
				}
			}
		})
	}
}

// fakeFiles serves the named files; any other path does not exist.
func fakeFiles(files map[string]string) ReadFile {
	return func(path string) ([]byte, error) {
		if c, ok := files[path]; ok {
			return []byte(c), nil
		}
		return nil, fs.ErrNotExist
	}
}

// TestDetectFlavourFastSkipsEmptyLegacy checks which programs run: a family whose
// legacy table list is empty or missing gets no iptables-legacy-save; one whose list
// cannot be read (or names a table) does.
func TestDetectFlavourFastSkipsEmptyLegacy(t *testing.T) {
	denied := func(path string) ([]byte, error) {
		if path == legacyTableFiles[1] {
			return nil, fs.ErrPermission
		}
		return []byte(""), nil
	}
	cases := []struct {
		name     string
		read     ReadFile
		wantRun  []string
		wantSkip []string
	}{
		{"both lists empty", fakeFiles(map[string]string{legacyTableFiles[0]: "", legacyTableFiles[1]: "\n"}), nil, []string{"iptables-legacy-save", "ip6tables-legacy-save"}},
		{"ip_tables not loaded", fakeFiles(nil), nil, []string{"iptables-legacy-save", "ip6tables-legacy-save"}},
		{"IPv4 has a table", fakeFiles(map[string]string{legacyTableFiles[0]: "nat\n"}), []string{"iptables-legacy-save"}, []string{"ip6tables-legacy-save"}},
		{"IPv6 list unreadable", denied, []string{"ip6tables-legacy-save"}, []string{"iptables-legacy-save"}},
		{"no reader", nil, []string{"iptables-legacy-save", "ip6tables-legacy-save"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, calls := fakeSaves(map[string]string{"iptables-legacy-save": twoRules, "ip6tables-legacy-save": twoRules})
			fl, why := DetectFlavourFast(out, tc.read)
			for _, c := range tc.wantRun {
				if !slices.Contains(*calls, c) {
					t.Errorf("%s not run; ran %v", c, *calls)
				}
			}
			for _, c := range tc.wantSkip {
				if slices.Contains(*calls, c) {
					t.Errorf("%s run although its table list is empty; ran %v", c, *calls)
				}
			}
			// Legacy rules seen, none in nft: legacy; none seen: nft.
			want := FlavourLegacy
			if len(tc.wantRun) == 0 {
				want = FlavourNFT
			}
			if fl != want {
				t.Errorf("flavour %s (%s), want %s", fl, why, want)
			}
		})
	}
}

func TestBinariesFor(t *testing.T) {
	if b := BinariesFor(model.IPv6, FlavourLegacy); b != (Binaries{"ip6tables-legacy", "ip6tables-legacy-save", "ip6tables-legacy-restore"}) {
		t.Errorf("BinariesFor(IPv6, legacy) = %+v", b)
	}
	if b := BinariesFor(model.IPv4, FlavourNFT); b != (Binaries{"iptables-nft", "iptables-nft-save", "iptables-nft-restore"}) {
		t.Errorf("BinariesFor(IPv4, nft) = %+v", b)
	}
}

// TestDetectFlavourKernel runs the real binaries in a new network namespace: empty,
// it is nft; with a legacy kubelet hint, legacy; with an nft hint added too, nft.
func TestDetectFlavourKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	for _, bin := range []string{"ip", "iptables-nft", "iptables-legacy"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
	ns := "kproxy-flavour-test"
	_ = exec.Command("ip", "netns", "del", ns).Run() // a leftover of an interrupted run, if any
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	})
	inNS := func(name string, args ...string) ([]byte, error) {
		return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...).Output()
	}
	must := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, out)
		}
	}
	readInNS := func(path string) ([]byte, error) {
		b, err := inNS("cat", path)
		if err != nil {
			return nil, fs.ErrNotExist // cat's error: the file is missing here
		}
		return b, nil
	}
	if fl, why := DetectFlavour(inNS); fl != FlavourNFT {
		t.Errorf("empty namespace: %s (%s), want nft", fl, why)
	}
	counted, calls := countCalls(inNS)
	if fl, why := DetectFlavourFast(counted, readInNS); fl != FlavourNFT {
		t.Errorf("empty namespace, fast: %s (%s), want nft", fl, why)
	}
	for _, c := range *calls {
		if strings.Contains(c, "legacy") {
			t.Errorf("empty namespace, fast: ran %q although no legacy table exists", c)
		}
	}
	if _, err := inNS("iptables-legacy-save"); err != nil {
		t.Skipf("iptables-legacy does not work here: %v", err)
	}
	must("iptables-legacy", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT")
	if fl, why := DetectFlavour(inNS); fl != FlavourLegacy {
		t.Errorf("legacy hint: %s (%s), want legacy", fl, why)
	}
	if fl, why := DetectFlavourFast(inNS, readInNS); fl != FlavourLegacy {
		t.Errorf("legacy hint, fast: %s (%s), want legacy", fl, why)
	}
	must("iptables-nft", "-t", "mangle", "-N", "KUBE-KUBELET-CANARY")
	if fl, why := DetectFlavour(inNS); fl != FlavourNFT {
		t.Errorf("nft canary and legacy hint: %s (%s), want nft (checked first)", fl, why)
	}
	if fl, why := DetectFlavourFast(inNS, readInNS); fl != FlavourNFT {
		t.Errorf("nft canary and legacy hint, fast: %s (%s), want nft (checked first)", fl, why)
	}
	// The legacy tables live in the namespace's kernel state: remove ours.
	must("iptables-legacy", "-t", "mangle", "-X", "KUBE-IPTABLES-HINT")
}

// countCalls wraps out, recording each program it runs.
func countCalls(out CommandOutput) (CommandOutput, *[]string) {
	var calls []string
	var mu sync.Mutex
	return func(name string, args ...string) ([]byte, error) {
		mu.Lock()
		calls = append(calls, strings.TrimSpace(name+" "+strings.Join(args, " ")))
		mu.Unlock()
		return out(name, args...)
	}, &calls
}
