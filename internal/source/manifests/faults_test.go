package manifests

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// configMapVolume lays a directory out the way kubelet mounts a ConfigMap, and
// updates it the way kubelet's AtomicWriter does: the files go into a new timestamped
// directory, a temporary "..data_tmp" symlink to it is renamed over "..data", the
// visible "name -> ..data/name" links of new keys are created and those of removed
// keys deleted, and the old timestamped directory is removed.
type configMapVolume struct {
	dir   string
	n     int
	cur   string   // the timestamped directory ..data points at
	names []string // the visible links
}

func (v *configMapVolume) update(t *testing.T, files map[string]string) {
	t.Helper()
	v.n++
	ts := fmt.Sprintf("..2026_12_06_13_00_%02d.%09d", v.n, 123456789)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(v.dir, ts), 0o755))
	for name, content := range files {
		must(os.WriteFile(filepath.Join(v.dir, ts, name), []byte(content), 0o644))
	}
	must(os.Symlink(ts, filepath.Join(v.dir, "..data_tmp")))
	must(os.Rename(filepath.Join(v.dir, "..data_tmp"), filepath.Join(v.dir, "..data")))
	names := slices.Sorted(maps.Keys(files))
	for _, name := range names {
		if !slices.Contains(v.names, name) {
			must(os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)))
		}
	}
	for _, name := range v.names {
		if !slices.Contains(names, name) {
			must(os.Remove(filepath.Join(v.dir, name)))
		}
	}
	if v.cur != "" {
		must(os.RemoveAll(filepath.Join(v.dir, v.cur)))
	}
	v.cur, v.names = ts, names
}

// marker writes one more Service and waits for it: passes run one after another, so
// once it is delivered, every delivery of the passes before it has happened.
func marker(t *testing.T, r *running, dir, name string) {
	t.Helper()
	writeFile(t, dir, name+".yaml", service(name, "  ports: [{port: 80}]\n"))
	waitFor(t, "marker "+name, func() bool { return r.rec.service("default/"+name) != nil })
}

// waitLong is waitFor for what may take up to a rescan.
func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(rescanInterval + 5*time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func deletions(calls []string) []string {
	var out []string
	for _, c := range calls {
		if strings.HasPrefix(c, "delete ") {
			out = append(out, c)
		}
	}
	return out
}

func TestConfigMapVolume(t *testing.T) {
	dir := t.TempDir()
	v := &configMapVolume{dir: dir}
	v.update(t, map[string]string{
		"a.yaml": service("a", "  ports: [{port: 80}]\n"),
		"b.yaml": service("b", "  ports: [{port: 80}]\n"),
	})
	r := start(t, defaultOptions(dir, t.TempDir()))
	if r.rec.service("default/a") == nil || r.rec.service("default/b") == nil {
		t.Fatalf("initial load through ..data links: calls %v", r.rec.callLog())
	}
	ipA := r.rec.service("default/a").Spec.ClusterIP

	// One update changes a, adds c and removes b.
	n := len(r.rec.callLog())
	begin := time.Now()
	v.update(t, map[string]string{
		"a.yaml": service("a", "  ports: [{port: 8080}]\n"),
		"c.yaml": service("c", "  ports: [{port: 80}]\n"),
	})
	waitFor(t, "the update", func() bool {
		a := r.rec.service("default/a")
		return a.Spec.Ports[0].Port == 8080 && r.rec.service("default/c") != nil && r.rec.service("default/b") == nil
	})
	if d := time.Since(begin); d > time.Second {
		t.Errorf("a ConfigMap update took %v to show, want under 1s", d)
	}
	calls := r.rec.callsSince(n)
	slices.Sort(calls)
	if want := []string{"delete service default/b", "upsert service default/a", "upsert service default/c"}; !slices.Equal(calls, want) {
		t.Errorf("calls for the update: %v, want %v (each once: the ..data entries are not manifests)", calls, want)
	}
	if got := r.rec.service("default/a").Spec.ClusterIP; got != ipA {
		t.Errorf("a moved from %s to %s", ipA, got)
	}
	if errs := errorsText(r.src); errs != "" {
		t.Errorf("errors after a ConfigMap update: %s", errs)
	}
}

// TestUnreadableFileKeepsObjects: a file that is there but cannot be read whole keeps
// the objects of its last good read, and says why.
func TestUnreadableFileKeepsObjects(t *testing.T) {
	good := service("a", "  ports: [{port: 80}]\n") + "---\n" + service("b", "  ports: [{port: 80}]\n")
	cases := []struct {
		name    string
		breakIt func(t *testing.T, path string)
		wantErr string
	}{
		{"truncated by an in-place save", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}, "a.yaml is empty: taken as a file being written; the objects it had are kept until it has content or is removed"},
		{"first half of an in-place save", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(good[:len(good)/2+7]), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "a.yaml"},
		{"replaced by a dangling symlink", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("/nonexistent/a.yaml", path); err != nil {
				t.Fatal(err)
			}
		}, "a.yaml is a symlink to /nonexistent/a.yaml, which does not exist; the objects the file had are kept until the link resolves or is removed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "a.yaml")
			writeFile(t, dir, "a.yaml", good)
			r := start(t, defaultOptions(dir, t.TempDir()))
			n := len(r.rec.callLog())
			tc.breakIt(t, path)
			waitFor(t, "the error", func() bool { return strings.Contains(errorsText(r.src), tc.wantErr) })
			marker(t, r, dir, "m1")
			if d := deletions(r.rec.callsSince(n)); len(d) != 0 {
				t.Errorf("a broken file deleted %v", d)
			}
			// The good content again (through the link's target for the symlink case).
			target := path
			if l, err := os.Readlink(path); err == nil {
				target = filepath.Join(t.TempDir(), "a.yaml")
				_ = os.Remove(path)
				if err := os.Symlink(target, path); err != nil {
					t.Fatal(err)
				}
				_ = l
			}
			if err := os.WriteFile(target, []byte(good+"---\n"+service("c", "  ports: [{port: 80}]\n")), 0o644); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "c from the repaired file", func() bool { return r.rec.service("default/c") != nil })
			waitFor(t, "the error to clear", func() bool { return len(r.src.Errors()) == 0 })
			if d := deletions(r.rec.callsSince(n)); len(d) != 0 {
				t.Errorf("deletions while the file was broken and repaired: %v", d)
			}
		})
	}
}

func TestEditorFilesAreNotManifests(t *testing.T) {
	cases := map[string]bool{
		"svc.yaml": true, "svc.yml": true, "svc.json": true, "SVC.YAML": true,
		".svc.yaml.swp": false, ".svc.yaml.swx": false, "svc.yaml~": false, "#svc.yaml#": false,
		".#svc.yaml": false, "4913": false, "svc.yaml.bak": false, "svc.yaml.orig": false,
		".svc.yaml.tmp": false, "..data": false, "..2026_12_06_13_00_00.123456789": false, "..data_tmp": false,
	}
	for name, want := range cases {
		if got := eligibleFile(name); got != want {
			t.Errorf("eligibleFile(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestSymlinkReplacingAFileIsFollowed(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	writeFile(t, dir, "a.yaml", service("a", "  ports: [{port: 80}]\n"))
	r := start(t, defaultOptions(dir, t.TempDir()))
	n := len(r.rec.callLog())
	target := filepath.Join(elsewhere, "a.yaml")
	if err := os.WriteFile(target, []byte(service("a", "  ports: [{port: 81}]\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, ".a.link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, ".a.link"), filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a from the link's target", func() bool { return r.rec.service("default/a").Spec.Ports[0].Port == 81 })
	if calls := r.rec.callsSince(n); !slices.Equal(calls, []string{"upsert service default/a"}) {
		t.Errorf("calls %v, want one upsert of a", calls)
	}
}

func TestDirectoryRemovedAndRecreated(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "manifests")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "a.yaml", service("a", "  ports: [{port: 80}]\n"))
	writeFile(t, dir, "b.yaml", service("b", "  ports: [{port: 80}]\n"))
	r := start(t, defaultOptions(dir, t.TempDir()))
	n := len(r.rec.callLog())

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	// Gone for longer than the debounce and the retry: nothing may be deleted.
	time.Sleep(2 * retryInterval)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * retryInterval) // recreated but still empty
	if calls := r.rec.callsSince(n); len(calls) != 0 {
		t.Fatalf("calls while the directory was gone or empty: %v", calls)
	}
	// Filled file by file, as a copy does: it is read once complete.
	writeFile(t, dir, "a.yaml", service("a", "  ports: [{port: 80}]\n"))
	time.Sleep(settleDelay / 2) // the copy goes on
	writeFile(t, dir, "b.yaml", service("b", "  ports: [{port: 80}]\n"))
	time.Sleep(settleDelay / 2)
	writeFile(t, dir, "c.yaml", service("c", "  ports: [{port: 80}]\n"))
	waitFor(t, "c", func() bool { return r.rec.service("default/c") != nil })
	if calls := r.rec.callsSince(n); !slices.Equal(calls, []string{"upsert service default/c"}) {
		t.Errorf("calls once the recreated directory is filled: %v, want only c's upsert", calls)
	}
	// The new directory is watched: a change shows well before the rescan would find it.
	begin := time.Now()
	writeFile(t, dir, "d.yaml", service("d", "  ports: [{port: 80}]\n"))
	waitFor(t, "d", func() bool { return r.rec.service("default/d") != nil })
	if d := time.Since(begin); d > rescanInterval/2 {
		t.Errorf("a file in the recreated directory took %v to show: the directory is not watched", d)
	}
}

// TestStateDirUnwritable: while allocations cannot be saved, a Service that needs one
// is reported by name and not delivered, the others keep working (and take edits that
// need no allocation), and once the state directory is writable again the waiting
// Service gets addresses no other Service holds.
func TestStateDirUnwritable(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	writeFile(t, dir, "a.yaml", service("a", "  type: NodePort\n  ports: [{port: 80}]\n"))
	r := start(t, defaultOptions(dir, state))
	a := r.rec.service("default/a")
	n := len(r.rec.callLog())

	// A directory where the state file goes makes every save fail.
	stateFile := filepath.Join(state, "allocations.json")
	if err := os.Remove(stateFile); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(stateFile, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "new.yaml", service("new", "  type: NodePort\n  ports: [{port: 80}]\n"))
	want := "service default/new: the allocations cannot be saved in the state directory " + state +
		", so no new ClusterIP or NodePort is handed out until it can: saving allocations to " + stateFile +
		": renaming the temporary file: file exists (" + filepath.Join(dir, "new.yaml") + " document 1 (line 1))"
	waitFor(t, "the error naming default/new", func() bool { return strings.Contains(errorsText(r.src), want) })
	// An edit of a that keeps its allocation goes through.
	writeFile(t, dir, "a.yaml", service("a", "  type: NodePort\n  ports: [{port: 80, targetPort: 8080}]\n"))
	waitFor(t, "a's edit", func() bool { return r.rec.service("default/a").Spec.Ports[0].TargetPort.IntValue() == 8080 })
	if got := errorsText(r.src); strings.Count(got, "\n") != 1 {
		t.Errorf("errors while the state dir is unwritable: %q, want only the one about default/new", got)
	}
	if got := r.rec.service("default/a"); got.Spec.ClusterIP != a.Spec.ClusterIP || got.Spec.Ports[0].NodePort != a.Spec.Ports[0].NodePort {
		t.Errorf("a's allocation changed: %s:%d -> %s:%d", a.Spec.ClusterIP, a.Spec.Ports[0].NodePort, got.Spec.ClusterIP, got.Spec.Ports[0].NodePort)
	}
	if r.rec.service("default/new") != nil {
		t.Errorf("default/new was delivered with an allocation that was not saved")
	}
	// An edit of a that needs a new NodePort waits too; a keeps its last version.
	writeFile(t, dir, "a.yaml", service("a", "  type: NodePort\n  ports: [{name: a, port: 80, targetPort: 8080}, {name: b, port: 81}]\n"))
	waitFor(t, "the error naming default/a", func() bool {
		return strings.Contains(errorsText(r.src), "service default/a: the allocations cannot be saved")
	})
	if got := r.rec.service("default/a"); len(got.Spec.Ports) != 1 {
		t.Errorf("a's edit was delivered without its new NodePort saved: %+v", got.Spec.Ports)
	}

	if err := os.RemoveAll(stateFile); err != nil {
		t.Fatal(err)
	}
	// The retry has backed off by now; it comes within rescanInterval.
	waitLong(t, "default/new once the state dir is writable", func() bool { return r.rec.service("default/new") != nil })
	waitFor(t, "a's second port", func() bool { return len(r.rec.service("default/a").Spec.Ports) == 2 })
	nw := r.rec.service("default/new")
	if nw.Spec.ClusterIP == a.Spec.ClusterIP || nw.Spec.Ports[0].NodePort == a.Spec.Ports[0].NodePort {
		t.Errorf("default/new got %s:%d, a holds %s:%d", nw.Spec.ClusterIP, nw.Spec.Ports[0].NodePort, a.Spec.ClusterIP, a.Spec.Ports[0].NodePort)
	}
	if d := deletions(r.rec.callsSince(n)); len(d) != 0 {
		t.Errorf("deletions: %v", d)
	}
	if errs := errorsText(r.src); errs != "" {
		t.Errorf("errors left: %s", errs)
	}
}

// TestSymlinkTargetOutsideIsWatched: an edit of a link's target in another directory,
// and the creation of a dangling link's target, show as fast as an edit in the
// directory, not at the rescan.
func TestSymlinkTargetOutsideIsWatched(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	target := filepath.Join(elsewhere, "a.yaml")
	if err := os.WriteFile(target, []byte(service("a", "  ports: [{port: 80}]\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(elsewhere, "b.yaml"), filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	r := start(t, defaultOptions(dir, t.TempDir()))
	if want := "b.yaml is a symlink to " + filepath.Join(elsewhere, "b.yaml") + ", which does not exist"; !strings.Contains(errorsText(r.src), want) {
		t.Errorf("errors %q, want one saying %q", errorsText(r.src), want)
	}

	begin := time.Now()
	if err := os.WriteFile(target, []byte(service("a", "  ports: [{port: 81}]\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a's edit through its link", func() bool { return r.rec.service("default/a").Spec.Ports[0].Port == 81 })
	if d := time.Since(begin); d > time.Second {
		t.Errorf("an edit of a link's target took %v to show, want under 1s", d)
	}
	begin = time.Now()
	writeFile(t, elsewhere, "b.yaml", service("b", "  ports: [{port: 80}]\n"))
	waitFor(t, "b once its link resolves", func() bool { return r.rec.service("default/b") != nil })
	if d := time.Since(begin); d > time.Second {
		t.Errorf("a dangling link's target took %v to show once created, want under 1s", d)
	}
	if errs := errorsText(r.src); errs != "" {
		t.Errorf("errors left: %s", errs)
	}
}

func TestOutsideTargetDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "m")
	cases := []struct {
		name, link string
		want       string
	}{
		{"configmap key", "..data/a.yaml", ""},
		{"same directory", "b.yaml", ""},
		{"sibling directory", "../elsewhere/a.yaml", filepath.Join(root, "elsewhere")},
		{"parent directory", "../a.yaml", root},
		{"absolute elsewhere", "/nonexistent/x/a.yaml", "/nonexistent/x"},
		{"name starting with dots inside", "..2026_12_06_13_00_00.123456789/a.yaml", ""},
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &Source{opts: Options{Dir: dir}}
	for i, tc := range cases {
		path := filepath.Join(dir, fmt.Sprintf("l%d.yaml", i))
		if err := os.Symlink(tc.link, path); err != nil {
			t.Fatal(err)
		}
		if got := s.outsideTargetDir(path); got != tc.want {
			t.Errorf("%s: outsideTargetDir(-> %s) = %q, want %q", tc.name, tc.link, got, tc.want)
		}
	}
}

func TestRetryAfterBacksOff(t *testing.T) {
	s := &Source{}
	steps := []struct {
		saveFailed bool
		want       time.Duration
	}{
		{true, time.Second}, {true, 2 * time.Second}, {true, 4 * time.Second}, {true, 8 * time.Second},
		{true, 10 * time.Second}, {true, 10 * time.Second}, {false, 0}, {true, time.Second},
	}
	for i, st := range steps {
		if got := s.retryAfter(st.saveFailed); got != st.want {
			t.Errorf("step %d (saveFailed %v): retry after %v, want %v", i, st.saveFailed, got, st.want)
		}
	}
}
