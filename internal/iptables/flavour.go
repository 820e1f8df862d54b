package iptables

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// Flavour is which iptables implementation kproxy drives: the nf_tables-backed
// iptables-nft or the old x_tables iptables-legacy. Both can be installed; rules
// written through one are invisible to the other, so kproxy must use the one the
// rest of the node (kubelet, the CNI plugin) uses.
type Flavour string

const (
	// FlavourNFT is iptables-nft: the iptables API over nf_tables.
	FlavourNFT Flavour = "nft"
	// FlavourLegacy is iptables-legacy: the x_tables kernel interface.
	FlavourLegacy Flavour = "legacy"
)

// Binaries are the three programs of one family and flavour.
type Binaries struct {
	IPTables, Save, Restore string
}

// BinariesFor names the programs of the family in the flavour: iptables-nft,
// ip6tables-legacy-restore, ...
func BinariesFor(f model.Family, fl Flavour) Binaries {
	base := "iptables"
	if f == model.IPv6 {
		base = "ip6tables"
	}
	base += "-" + string(fl)
	return Binaries{IPTables: base, Save: base + "-save", Restore: base + "-restore"}
}

// CommandOutput runs a program and returns its standard output; detection tests
// replace it with canned output.
type CommandOutput func(name string, args ...string) ([]byte, error)

// kubeletChains are the mangle chains kubelet (1.17 and later) creates in the flavour
// it uses: KUBE-IPTABLES-HINT as the hint itself, KUBE-KUBELET-CANARY for its monitor.
var kubeletChains = regexp.MustCompile(`(?m)^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)[ \t]`)

// ruleLine matches a rule (not a chain declaration or policy) in iptables-save output.
var ruleLine = regexp.MustCompile(`(?m)^-A `)

// ReadFile reads a file; detection tests point it at canned content or at another
// network namespace.
type ReadFile func(path string) ([]byte, error)

// legacyTableFiles list the x_tables tables of this network namespace per family:
// iptables-legacy-save without -t dumps exactly the tables named there, and nothing
// when the file is missing (ip_tables not loaded) or empty.
var legacyTableFiles = []string{"/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"}

// DetectFlavour decides the flavour the way kubernetes-sigs/iptables-wrappers does,
// and says why:
//  1. kubelet's chains in iptables-nft-save -t mangle (IPv4, then IPv6): nft;
//  2. kubelet's chains in iptables-legacy-save (IPv4, then IPv6): legacy. The whole
//     dump is read: "-t mangle" would make the legacy kernel module create the table;
//  3. no kubelet on the node (standalone): the flavour holding more rules, as the
//     wrappers' older script counted them, so kproxy joins whatever already filters
//     this node; legacy only when it holds strictly more;
//  4. otherwise nft, the default of every current distribution.
//
// Errors (a flavour not installed, a kernel without x_tables) count as no output.
func DetectFlavour(out CommandOutput) (Flavour, string) { return DetectFlavourFast(out, nil) }

// DetectFlavourFast is DetectFlavour with fewer programs run, for start-up where each
// costs (a loaded node, the emulated IPVS test guest: about a second each): the two
// nft dumps run at once, and a family's iptables-legacy-save is not run when read
// shows its legacy table list empty or missing, since it would print nothing. A nil
// read, or a list that cannot be read, runs the program as DetectFlavour does.
func DetectFlavourFast(out CommandOutput, read ReadFile) (Flavour, string) {
	get := func(name string, args ...string) []byte {
		b, err := out(name, args...)
		if err != nil {
			return nil
		}
		return b
	}
	nft := parallel(func() []byte { return get("iptables-nft-save", "-t", "mangle") },
		func() []byte { return get("ip6tables-nft-save", "-t", "mangle") })
	for i, save := range []string{"iptables-nft-save", "ip6tables-nft-save"} {
		if kubeletChains.Match(nft[i]) {
			return FlavourNFT, "kubelet's KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY is in " + save + " -t mangle"
		}
	}
	legacySave := func(i int, name string) func() []byte {
		return func() []byte {
			if read != nil {
				if names, err := read(legacyTableFiles[i]); (err == nil && len(bytes.TrimSpace(names)) == 0) || errors.Is(err, fs.ErrNotExist) {
					return nil
				}
			}
			return get(name)
		}
	}
	legacy := parallel(legacySave(0, "iptables-legacy-save"), legacySave(1, "ip6tables-legacy-save"))
	for i, name := range []string{"iptables-legacy-save", "ip6tables-legacy-save"} {
		if kubeletChains.Match(legacy[i]) {
			return FlavourLegacy, "kubelet's KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY is in " + name
		}
	}
	nLegacy := len(ruleLine.FindAll(legacy[0], -1)) + len(ruleLine.FindAll(legacy[1], -1))
	if nLegacy > 0 {
		all := parallel(func() []byte { return get("iptables-nft-save") }, func() []byte { return get("ip6tables-nft-save") })
		nNFT := len(ruleLine.FindAll(all[0], -1)) + len(ruleLine.FindAll(all[1], -1))
		if nLegacy > nNFT {
			return FlavourLegacy, "no kubelet chains; iptables-legacy holds more rules than iptables-nft"
		}
	}
	return FlavourNFT, "no kubelet chains and no more legacy rules than nft rules: nft is the default"
}

// parallel runs the two functions at once and returns their results in order.
func parallel(a, b func() []byte) [2][]byte {
	var out [2][]byte
	done := make(chan struct{})
	go func() {
		out[1] = b()
		close(done)
	}()
	out[0] = a()
	<-done
	return out
}

var (
	detectOnce     sync.Once
	detectedFlavor Flavour
)

// Detected returns the flavour of this node (network namespace), detected once per
// process and logged; every Runner of the process uses it.
func Detected() Flavour {
	detectOnce.Do(func() {
		fl, why := DetectFlavourFast(runOutput, os.ReadFile)
		detectedFlavor = fl
		klog.InfoS("Using iptables flavour", "flavour", fl, "reason", why)
	})
	return detectedFlavor
}

// runOutput runs a program with a deadline, so that a hung binary (a held xtables
// lock) cannot block start-up.
func runOutput(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = &stdout
	err := cmd.Run()
	return stdout.Bytes(), err
}
