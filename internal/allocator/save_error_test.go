package allocator

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/kproxy/kproxy/internal/model"
)

// breakSaving makes every save into dir fail (a directory where the state file goes
// makes the rename fail) and returns the function that repairs it.
func breakSaving(t *testing.T, dir string) (repair func()) {
	t.Helper()
	path := filepath.Join(dir, stateFileName)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(path, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.RemoveAll(path); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSaveErrorNamesOnlyChangedOwners: when the state directory cannot be written, a
// transaction's error lists exactly the owners whose holding it would have changed, and
// every owner holds what it held before; owners the transaction left as they were are
// not listed, so their (unchanged) results stay usable.
func TestSaveErrorNamesOnlyChangedOwners(t *testing.T) {
	ip := netip.MustParseAddr
	a1, b1, n1 := ip("10.96.0.1"), ip("10.96.0.2"), ip("10.96.0.3")
	cases := []struct {
		name        string
		txn         func(tx *Txn)
		wantChanged []string // nil: Update succeeds, as nothing needs saving
	}{
		{"same requests again", func(tx *Txn) {
			_, _ = tx.Assign("ns/a", Request{IPs: []IPRequest{{Family: model.IPv4}}})
			_, _ = tx.Assign("ns/b", Request{IPs: []IPRequest{{IP: b1}}, Ports: []PortRequest{{Key: "TCP/80", Port: 30080}}})
		}, nil},
		{"a new owner", func(tx *Txn) {
			_, _ = tx.Assign("ns/a", Request{IPs: []IPRequest{{Family: model.IPv4}}})
			_, _ = tx.Assign("ns/new", Request{IPs: []IPRequest{{IP: n1}}})
		}, []string{"ns/new"}},
		{"a release and a new owner", func(tx *Txn) {
			tx.Release("ns/b")
			_, _ = tx.Assign("ns/new", Request{IPs: []IPRequest{{IP: b1}}, Ports: []PortRequest{{Key: "TCP/80", Port: 30080}}})
		}, []string{"ns/b", "ns/new"}},
		{"a new nodePort for an owner", func(tx *Txn) {
			_, _ = tx.Assign("ns/a", Request{IPs: []IPRequest{{Family: model.IPv4}}, Ports: []PortRequest{{Key: "TCP/443", Port: 30443}}})
		}, []string{"ns/a"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a := mustOpen(t, dir, DefaultNodePortRange, "10.96.0.0/24")
			if _, err := a.Assign("ns/a", Request{IPs: []IPRequest{{IP: a1}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Assign("ns/b", Request{IPs: []IPRequest{{IP: b1}}, Ports: []PortRequest{{Key: "TCP/80", Port: 30080}}}); err != nil {
				t.Fatal(err)
			}
			breakSaving(t, dir)
			err := a.Update(tc.txn)
			se, ok := errors.AsType[*SaveError](err)
			switch {
			case tc.wantChanged == nil && err != nil:
				t.Fatalf("Update: %v, want no error", err)
			case tc.wantChanged != nil && !ok:
				t.Fatalf("Update: %v, want a *SaveError", err)
			case ok && !slices.Equal(se.Changed, tc.wantChanged):
				t.Errorf("SaveError.Changed = %v, want %v", se.Changed, tc.wantChanged)
			case ok && se.Dir != dir:
				t.Errorf("SaveError.Dir = %q, want %q", se.Dir, dir)
			}
			if got := a.Owners(); !slices.Equal(got, []string{"ns/a", "ns/b"}) {
				t.Errorf("owners after the failed save: %v, want [ns/a ns/b]", got)
			}
			if h, _ := a.IPHolder(b1); h != "ns/b" {
				t.Errorf("10.96.0.2 is held by %q, want ns/b", h)
			}
			if h, _ := a.NodePortHolder(30080); h != "ns/b" {
				t.Errorf("nodePort 30080 is held by %q, want ns/b", h)
			}
			if h, held := a.NodePortHolder(30443); held {
				t.Errorf("nodePort 30443 is held by %q after a failed save", h)
			}
		})
	}
}

// TestNoDuplicatesAcrossFailedSaves: allocations refused while the state directory
// is unwritable are made afresh once it can be written, never on top of another
// owner's, and a reload gives every owner what it held.
func TestNoDuplicatesAcrossFailedSaves(t *testing.T) {
	dir := t.TempDir()
	a := mustOpen(t, dir, PortRange{Base: 30000, Size: 4}, "10.96.0.0/29")
	dyn := Request{IPs: []IPRequest{{Family: model.IPv4}}, Ports: []PortRequest{{Key: "TCP/80"}}}
	for _, o := range []string{"ns/a", "ns/b"} {
		if _, err := a.Assign(o, dyn); err != nil {
			t.Fatal(err)
		}
	}
	repair := breakSaving(t, dir)
	for range 3 {
		if _, err := a.Assign("ns/c", dyn); err == nil {
			t.Fatal("ns/c got an allocation that could not be saved")
		}
	}
	repair()
	if _, err := a.Assign("ns/c", dyn); err != nil {
		t.Fatalf("ns/c once the state directory is writable: %v", err)
	}
	want := map[string][2]string{}
	ips, ports := map[netip.Addr]string{}, map[int]string{}
	for _, o := range []string{"ns/a", "ns/b", "ns/c"} {
		hi, hp := a.Holding(o)
		if len(hi) != 1 || len(hp) != 1 {
			t.Fatalf("%s holds %v %v, want one IP and one nodePort", o, hi, hp)
		}
		if prev, dup := ips[hi[0]]; dup {
			t.Errorf("%v held by %s and %s", hi[0], prev, o)
		}
		if prev, dup := ports[hp["TCP/80"]]; dup {
			t.Errorf("nodePort %d held by %s and %s", hp["TCP/80"], prev, o)
		}
		ips[hi[0]], ports[hp["TCP/80"]] = o, o
		want[o] = [2]string{hi[0].String(), strconv.Itoa(hp["TCP/80"])}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := mustOpen(t, dir, PortRange{Base: 30000, Size: 4}, "10.96.0.0/29")
	for o, w := range want {
		hi, hp := b.Holding(o)
		if len(hi) != 1 || hi[0].String() != w[0] || strconv.Itoa(hp["TCP/80"]) != w[1] {
			t.Errorf("%s after reload holds %v %v, want %v", o, hi, hp, w)
		}
	}
}
