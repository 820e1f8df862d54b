package sysctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSetWritesBelowDir(t *testing.T) {
	root := t.TempDir()
	const path = "net/ipv4/conf/all/route_localnet"
	full := filepath.Join(root, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Dir(root).Set(path, "1"); err != nil {
		t.Fatal(err)
	}
	if got, err := Dir(root).Read(path); err != nil || got != "1" {
		t.Errorf("after Set: %q, %v; want 1", got, err)
	}
}

// TestSetReadOnlyTunable uses a tunable the kernel never lets anyone write, as a
// container's read-only /proc/sys behaves: the value it already has is accepted, a
// different one is an error that says what to do.
func TestSetReadOnlyTunable(t *testing.T) {
	const path = "net/ipv4/tcp_available_congestion_control"
	d := Dir("/proc/sys")
	cur, err := d.Read(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	if err := d.Set(path, cur); err != nil {
		t.Errorf("Set to the value it has (%q): %v", cur, err)
	}
	err = d.Set(path, cur+" kproxy")
	if err == nil {
		t.Fatalf("Set of a read-only tunable to a new value succeeded")
	}
	for _, want := range []string{path, "(now " + cur + ")", "--proc-sys-dir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if !Unwritable(err) {
		t.Errorf("Unwritable(%v) = false", err)
	}
}
