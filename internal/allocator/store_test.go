package allocator

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kproxy/kproxy/internal/model"
)

func TestPersistenceAcrossReload(t *testing.T) {
	dir := t.TempDir()
	a := mustOpen(t, dir, DefaultNodePortRange, "10.96.0.0/12", "fd00:10:96::/112")
	type held struct {
		ips   []netip.Addr
		ports map[string]int
	}
	want := map[string]held{}
	for i := range 20 {
		owner := fmt.Sprintf("default/svc%d", i)
		out, err := a.Assign(owner, Request{
			IPs:   []IPRequest{{Family: model.IPv4}, {Family: model.IPv6}},
			Ports: []PortRequest{{Key: "TCP/80", Share: "80"}, {Key: "UDP/80", Share: "80"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		want[owner] = held{out.IPs, out.Ports}
	}
	if err := a.Release("default/svc0"); err != nil {
		t.Fatal(err)
	}
	delete(want, "default/svc0")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	b := mustOpen(t, dir, DefaultNodePortRange, "10.96.0.0/12", "fd00:10:96::/112")
	if got := b.Owners(); !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
		t.Fatalf("owners after reload: %v", got)
	}
	for owner, w := range want {
		// Dynamic requests give back exactly what was held.
		out, err := b.Assign(owner, Request{
			IPs:   []IPRequest{{Family: model.IPv4}, {Family: model.IPv6}},
			Ports: []PortRequest{{Key: "TCP/80", Share: "80"}, {Key: "UDP/80", Share: "80"}},
		})
		if err != nil || !slices.Equal(out.IPs, w.ips) || !maps.Equal(out.Ports, w.ports) {
			t.Errorf("%s after reload: %v %v (%v), want %v %v", owner, out.IPs, out.Ports, err, w.ips, w.ports)
		}
	}
	// And the reloaded allocator refuses collisions with them.
	w := want["default/svc1"]
	err := b.AllocateSpecificIP("default/other", w.ips[0])
	if err == nil || !strings.Contains(err.Error(), "held by default/svc1") {
		t.Errorf("collision after reload: %v", err)
	}
	err = b.AllocateSpecificNodePort("default/other", "TCP/80", w.ports["TCP/80"])
	if err == nil || !strings.Contains(err.Error(), "held by default/svc1") {
		t.Errorf("port collision after reload: %v", err)
	}
}

func TestReloadDropsWhatNoLongerFits(t *testing.T) {
	dir := t.TempDir()
	a := mustOpen(t, dir, DefaultNodePortRange, "10.96.0.0/24")
	if err := a.AllocateSpecificIP("ns/a", netip.MustParseAddr("10.96.0.200")); err != nil {
		t.Fatal(err)
	}
	if err := a.AllocateSpecificIP("ns/b", netip.MustParseAddr("10.96.0.20")); err != nil {
		t.Fatal(err)
	}
	if err := a.AllocateSpecificNodePort("ns/b", "TCP/80", 32000); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := mustOpen(t, dir, PortRange{Base: 30000, Size: 1000}, "10.96.0.0/25")
	if _, ok := b.IPHolder(netip.MustParseAddr("10.96.0.200")); ok {
		t.Errorf("an address outside the new range survived the reload")
	}
	ips, ports := b.Holding("ns/b")
	if !slices.Equal(ips, []netip.Addr{netip.MustParseAddr("10.96.0.20")}) || len(ports) != 0 {
		t.Errorf("ns/b after reload holds %v %v, want only 10.96.0.20", ips, ports)
	}
}

func TestStateDirLock(t *testing.T) {
	dir := t.TempDir()
	a := mustOpen(t, dir, DefaultNodePortRange, "10.96.0.0/24")
	_, err := Open(dir, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/24")}, DefaultNodePortRange)
	if err == nil || !strings.Contains(err.Error(), "in use by another kproxy process") {
		t.Fatalf("second Open of a locked dir: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := Open(dir, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/24")}, DefaultNodePortRange)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptStateFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, stateFileName), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/24")}, DefaultNodePortRange)
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt state file: %v", err)
	}
	// The failed Open must not keep the lock.
	b, err := Open(dir+"/", []netip.Prefix{netip.MustParsePrefix("10.96.0.0/24")}, DefaultNodePortRange)
	if err == nil {
		_ = b.Close()
	} else if strings.Contains(err.Error(), "in use") {
		t.Errorf("a failed Open kept the lock: %v", err)
	}
}

func TestSaveFailureUndoes(t *testing.T) {
	dir := t.TempDir()
	a := mustOpen(t, dir, DefaultNodePortRange, "10.96.0.0/24")
	if _, err := a.AllocateIP("ns/a", model.IPv4); err != nil {
		t.Fatal(err)
	}
	// A directory where the state file goes makes the rename fail.
	path := filepath.Join(dir, stateFileName)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(path, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AllocateIP("ns/b", model.IPv4); err == nil {
		t.Fatalf("allocation succeeded although it could not be saved")
	}
	if owners := a.Owners(); !slices.Equal(owners, []string{"ns/a"}) {
		t.Errorf("unsaved allocation kept: owners %v", owners)
	}
}

func TestConcurrentAllocationNeverDuplicates(t *testing.T) {
	for _, dir := range []string{"", t.TempDir()} {
		a := mustOpen(t, dir, PortRange{Base: 30000, Size: 500}, "10.96.0.0/23")
		const workers, each = 16, 25
		var wg sync.WaitGroup
		var mu sync.Mutex
		ips := map[netip.Addr]string{}
		ports := map[int]string{}
		var errs []error
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					owner := fmt.Sprintf("ns/w%d-%d", w, i)
					ip, err := a.AllocateIP(owner, model.IPv4)
					p, perr := a.AllocateNodePort(owner, "TCP/80")
					mu.Lock()
					if err != nil || perr != nil {
						errs = append(errs, err, perr)
					}
					if prev, dup := ips[ip]; dup {
						errs = append(errs, fmt.Errorf("%v given to %s and %s", ip, prev, owner))
					}
					if prev, dup := ports[p]; dup {
						errs = append(errs, fmt.Errorf("port %d given to %s and %s", p, prev, owner))
					}
					ips[ip], ports[p] = owner, owner
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		if len(ips) != workers*each || len(ports) != workers*each {
			t.Errorf("dir %q: %d IPs and %d ports for %d owners", dir, len(ips), len(ports), workers*each)
		}
	}
}
