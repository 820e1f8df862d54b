package allocator

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func modeOf(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// holdOne opens the allocator in dir and allocates one address, so the state file
// is written; it returns the allocator closed.
func holdOne(t *testing.T, dir string) {
	t.Helper()
	a := mustOpen(t, dir, DefaultNodePortRange, "10.96.0.0/24")
	if err := a.AllocateSpecificIP("ns/a", netip.MustParseAddr("10.96.0.7")); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestStateDirCreatedPrivate(t *testing.T) {
	// Two levels that do not exist yet, as /var/lib/kproxy on a fresh node.
	dir := filepath.Join(t.TempDir(), "lib", "kproxy")
	holdOne(t, dir)
	for path, want := range map[string]os.FileMode{
		dir:                               0o700,
		filepath.Dir(dir):                 0o700,
		filepath.Join(dir, stateFileName): 0o600,
		filepath.Join(dir, lockFileName):  0o600,
	} {
		if got := modeOf(t, path); got != want {
			t.Errorf("%s: mode %#o, want %#o", path, got, want)
		}
	}
}

// TestStateDirTightened: a directory of kproxy's files that others may open (as a
// kubelet's hostPath DirectoryOrCreate makes it) is restricted again, its
// allocations kept.
func TestStateDirTightened(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	holdOne(t, dir)
	for path, mode := range map[string]os.FileMode{
		dir: 0o777, filepath.Join(dir, stateFileName): 0o666, filepath.Join(dir, lockFileName): 0o644,
	} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	a := mustOpen(t, dir, DefaultNodePortRange, "10.96.0.0/24")
	for path, want := range map[string]os.FileMode{
		dir: 0o700, filepath.Join(dir, stateFileName): 0o600, filepath.Join(dir, lockFileName): 0o600,
	} {
		if got := modeOf(t, path); got != want {
			t.Errorf("%s: mode %#o after Open, want %#o", path, got, want)
		}
	}
	if got := a.Owners(); !slices.Equal(got, []string{"ns/a"}) {
		t.Errorf("owners after tightening: %v, want [ns/a]", got)
	}
}

// TestStateDirShared: a directory that holds other files belongs to something else
// too; its mode is left alone when others may only read it, and it is refused when
// they may write it.
func TestStateDirShared(t *testing.T) {
	for _, c := range []struct {
		mode    os.FileMode
		refused bool
	}{{0o755, false}, {0o750, false}, {0o775, true}, {0o777, true}} {
		dir := filepath.Join(t.TempDir(), "shared")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not kproxy's\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, c.mode); err != nil {
			t.Fatal(err)
		}
		a, err := Open(dir, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/24")}, DefaultNodePortRange)
		if c.refused {
			if err == nil {
				_ = a.Close()
				t.Errorf("mode %#o: Open succeeded, want it refused", c.mode)
			} else if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "notes.txt") {
				t.Errorf("mode %#o: error %q does not name the directory and the other file", c.mode, err)
			}
		} else {
			if err != nil {
				t.Errorf("mode %#o: %v", c.mode, err)
			} else {
				_ = a.Close()
			}
		}
		if got := modeOf(t, dir); got != c.mode {
			t.Errorf("mode %#o changed to %#o", c.mode, got)
		}
	}
}

// TestStateDirSymlinkNotFollowed: a symlink named like the state file in a directory
// others may write is somebody else's doing; kproxy neither chmods its target nor
// uses the directory.
func TestStateDirSymlinkNotFollowed(t *testing.T) {
	base := t.TempDir()
	target := filepath.Join(base, "target")
	if err := os.WriteFile(target, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, stateFileName)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	a, err := Open(dir, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/24")}, DefaultNodePortRange)
	if err == nil {
		_ = a.Close()
		t.Error("Open accepted a world-writable directory holding a symlink")
	}
	if got := modeOf(t, target); got != 0o644 {
		t.Errorf("the symlink's target changed mode to %#o", got)
	}
}
