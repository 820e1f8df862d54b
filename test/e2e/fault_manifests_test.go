package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// TestFaultManifests is the standalone source's part of the fault suite: what real
// deployments do to the manifest and state directories, with a client loop to an
// unchanged Service counting connections throughout. Each case runs its own kproxy on
// directories of its own, and logs a "FAULT case=... mode=... attempted=N failed=M
// recover=..." line for docs/reliability.md.
func TestFaultManifests(t *testing.T) {
	requireKproxy(t)
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t)
			cases := []struct {
				name string
				run  func(*testing.T, *faultCase)
			}{
				{"ConfigMapVolume", testFaultConfigMapVolume},
				{"EditorFiles", testFaultEditorFiles},
				{"Symlinks", testFaultSymlinks},
				{"DirectoryRemoved", testFaultDirectoryRemoved},
				{"StateDirReadOnly", testFaultStateDirReadOnly},
				{"StateDirFull", testFaultStateDirFull},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) { tc.run(t, newFaultCase(t, c, mode, tc.name)) })
			}
		})
	}
}

// faultCase is one case's kproxy and directories.
type faultCase struct {
	*env
	name string
	base string // the case's own directory: manifests, state and anything else
}

// faultRecover bounds how long kproxy may take to program a change once a fault is
// over; the 1 s promise of normal operation plus the source's 1 s retry.
var faultRecover = scaled(10 * time.Second)

// The Services of every case: steady is the one the client loop talks to.
var (
	steadySvc = cluster.Service{Namespace: ns, Name: "steady", Ports: []cluster.ServicePort{httpPort}}
	addedSvc  = cluster.Service{Namespace: ns, Name: "added", Ports: []cluster.ServicePort{httpPort}}
	goneSvc   = cluster.Service{Namespace: ns, Name: "gone", Ports: []cluster.ServicePort{httpPort}}
)

func newFaultCase(t *testing.T, c *cluster.Cluster, mode, name string) *faultCase {
	t.Helper()
	f := &faultCase{env: &env{c: c, mode: mode}, name: name, base: filepath.Join(c.WorkDir, name)}
	// The cluster's manifest helpers and kproxy's flags follow these fields.
	c.ManifestDir, c.StateDir = filepath.Join(f.base, "manifests"), filepath.Join(f.base, "state")
	for _, d := range []string{c.ManifestDir, c.StateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if f.proxy != nil {
			f.proxy.Kill()
		}
	})
	f.dumpOnFailure(t, steadySvc.Name, addedSvc.Name)
	return f
}

// withSlice is a Service and its EndpointSlice as one file.
func withSlice(svc cluster.Service, pods ...string) string {
	return cluster.Documents(svc.YAML(), slice(svc, pods...).YAML())
}

// answering waits until svc's ClusterIP answers from pod-a1 and returns its target.
func (f *faultCase) answering(t *testing.T, svc cluster.Service) string {
	t.Helper()
	target := hostPort(f.clusterIP(t, svc), 80)
	f.waitAnswer(t, "pod-a1", "tcp", target, firstSync)
	return target
}

// report ends the client loop, logs the FAULT line and fails the case if any
// connection to the unchanged Service failed.
func (f *faultCase) report(t *testing.T, loop *clientLoop, recovery time.Duration, extra ...string) {
	t.Helper()
	answers, failures := loop.finish()
	line := fmt.Sprintf("FAULT case=manifests-%s mode=%s attempted=%d failed=%d recover=%v",
		strings.ToLower(f.name), f.mode, answers+len(failures), len(failures), recovery.Round(time.Millisecond))
	t.Log(strings.Join(append([]string{line}, extra...), " "))
	if len(failures) > 0 {
		t.Errorf("%d connections to the unchanged Service failed: %s", len(failures), strings.Join(failures, "; "))
	}
	if answers < 50 {
		t.Errorf("the client loop made only %d connections; it did not run through the fault", answers)
	}
	if !f.proxy.Running() {
		t.Errorf("kproxy exited:\n%s", tail(f.proxy.Logs(), 40))
	}
}

// requireLog waits until kproxy's log has every one of the texts, and fails (without
// ending the case: its connection figures still count) if it does not in time.
func (f *faultCase) requireLog(t *testing.T, texts ...string) {
	t.Helper()
	err := f.c.WaitFor(func() error {
		logs := f.proxy.Logs()
		for _, s := range texts {
			if !strings.Contains(logs, s) {
				return fmt.Errorf("kproxy's log does not say %q", s)
			}
		}
		return nil
	}, faultRecover)
	if err != nil {
		t.Errorf("%v; log tail:\n%s", err, tail(f.proxy.Logs(), 30))
	}
}

// forbidLog fails if kproxy's log has any of the texts.
func (f *faultCase) forbidLog(t *testing.T, texts ...string) {
	t.Helper()
	logs := f.proxy.Logs()
	for _, s := range texts {
		if strings.Contains(logs, s) {
			t.Errorf("kproxy's log mentions %q:\n%s", s, tail(logs, 30))
		}
	}
}

// unanswered waits until target no longer answers (its Service is unprogrammed).
func (f *faultCase) unanswered(t *testing.T, target string) {
	t.Helper()
	err := f.c.WaitFor(func() error {
		if r := f.c.Request("pod-a1", "tcp", target, 1, cluster.Timeout(300*time.Millisecond))[0]; r.Error == "" {
			return fmt.Errorf("%s still answered by %s", target, r.Backend)
		}
		return nil
	}, faultRecover)
	if err != nil {
		t.Fatal(err)
	}
}

// atomicWriter lays the manifest directory out the way kubelet mounts a ConfigMap,
// and updates it the way kubelet's AtomicWriter does: the files go into a new
// timestamped directory, a "..data_tmp" symlink to it is renamed over "..data", the
// visible "name -> ..data/name" links of new keys are created, those of removed keys
// deleted, and the old timestamped directory is removed.
type atomicWriter struct {
	dir   string
	n     int
	cur   string
	names []string
}

func (w *atomicWriter) write(files map[string]string) error {
	w.n++
	ts := fmt.Sprintf("..2026_12_06_13_00_%02d.123456789", w.n)
	if err := os.Mkdir(filepath.Join(w.dir, ts), 0o755); err != nil {
		return err
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(w.dir, ts, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	if err := os.Symlink(ts, filepath.Join(w.dir, "..data_tmp")); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(w.dir, "..data_tmp"), filepath.Join(w.dir, "..data")); err != nil {
		return err
	}
	names := slices.Sorted(maps.Keys(files))
	for _, name := range names {
		if !slices.Contains(w.names, name) {
			if err := os.Symlink(filepath.Join("..data", name), filepath.Join(w.dir, name)); err != nil {
				return err
			}
		}
	}
	for _, name := range w.names {
		if !slices.Contains(names, name) {
			if err := os.Remove(filepath.Join(w.dir, name)); err != nil {
				return err
			}
		}
	}
	if w.cur != "" {
		if err := os.RemoveAll(filepath.Join(w.dir, w.cur)); err != nil {
			return err
		}
	}
	w.cur, w.names = ts, names
	return nil
}

// testFaultConfigMapVolume: updates through kubelet's symlink swap are programmed
// (a key added) and unprogrammed (a key removed), round after round, and the hidden
// ..data entries are not read as manifests a second time.
func testFaultConfigMapVolume(t *testing.T, f *faultCase) {
	w := &atomicWriter{dir: f.c.ManifestDir}
	files := map[string]string{
		"nodes.yaml":  nodesYAML(),
		"steady.yaml": withSlice(steadySvc, "pod-a2", "pod-b1"),
	}
	if err := w.write(files); err != nil {
		t.Fatal(err)
	}
	f.startProxy(t)
	target := f.answering(t, steadySvc)
	loop := startClientLoop(t, f.c, "pod-a1", target)

	var added, removed time.Duration // the slowest of the rounds
	for range 4 {
		files["added.yaml"] = withSlice(addedSvc, "pod-b2")
		begin := time.Now()
		if err := w.write(files); err != nil {
			t.Fatal(err)
		}
		addedTarget := f.answering(t, addedSvc)
		added = max(added, time.Since(begin))

		delete(files, "added.yaml")
		begin = time.Now()
		if err := w.write(files); err != nil {
			t.Fatal(err)
		}
		f.unanswered(t, addedTarget)
		removed = max(removed, time.Since(begin))
	}
	// Read twice, the ..data copies would be duplicates, reported as problems.
	f.forbidLog(t, "Ignoring a manifest")
	f.report(t, loop, added, fmt.Sprintf("add=%v remove=%v", added.Round(time.Millisecond), removed.Round(time.Millisecond)))
}

// testFaultEditorFiles: swap, backup and probe files are not manifests, and a file
// saved in place in steps (truncated, half written with invalid YAML, complete) keeps
// its Services all along.
func testFaultEditorFiles(t *testing.T, f *faultCase) {
	steadyFile := withSlice(steadySvc, "pod-a2", "pod-b1")
	if err := f.c.WriteManifest("nodes", nodesYAML()); err != nil {
		t.Fatal(err)
	}
	if err := f.c.WriteManifest("steady", steadyFile); err != nil {
		t.Fatal(err)
	}
	f.startProxy(t)
	target := f.answering(t, steadySvc)
	loop := startClientLoop(t, f.c, "pod-a1", target)

	// What vim, emacs and others leave beside the file; each would define steady a
	// second time (a duplicate) or not parse at all, were it read.
	junk := map[string]string{
		".steady.yaml.swp": "b0VIM 9.0\x00\x00garbage",
		"steady.yaml~":     steadyFile,
		"#steady.yaml#":    steadyFile + "\n  broken: [",
		"4913":             "",
	}
	for name, content := range junk {
		if err := os.WriteFile(filepath.Join(f.c.ManifestDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// vim removes its probe file at once.
	if err := os.Remove(filepath.Join(f.c.ManifestDir, "4913")); err != nil {
		t.Fatal(err)
	}

	// The in-place save: truncate, half the new content (cut inside a key, which is
	// invalid YAML), then the rest. Each step lasts longer than kproxy's debounce.
	final := steadyFile + "---\n" + withSlice(addedSvc, "pod-b2")
	cut := strings.Index(final, "targetPort") + len("targ")
	fh, err := os.OpenFile(filepath.Join(f.c.ManifestDir, "steady.yaml"), os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fh.Close() }()
	time.Sleep(time.Second) // the fault: an empty file
	if _, err := fh.WriteString(final[:cut]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the fault: half a file
	if _, err := fh.WriteString(final[cut:]); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	f.answering(t, addedSvc)
	took := time.Since(begin)
	// Both halves of the fault were seen, and reported.
	f.requireLog(t, "steady.yaml is empty: taken as a file being written", "steady.yaml document 1")
	for name := range junk {
		f.forbidLog(t, filepath.Join(f.c.ManifestDir, name))
	}
	f.report(t, loop, took)
}

// testFaultSymlinks: a file replaced by a symlink to a file elsewhere is followed,
// and edits of that file are seen as fast as edits in the directory; when it
// dangles, the error says so and the file's Services are kept.
func testFaultSymlinks(t *testing.T, f *faultCase) {
	elsewhere := filepath.Join(f.base, "elsewhere")
	if err := os.Mkdir(elsewhere, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := f.c.WriteManifest("nodes", nodesYAML()); err != nil {
		t.Fatal(err)
	}
	steadyFile := withSlice(steadySvc, "pod-a2", "pod-b1")
	if err := f.c.WriteManifest("steady", steadyFile); err != nil {
		t.Fatal(err)
	}
	f.startProxy(t)
	target := f.answering(t, steadySvc)
	loop := startClientLoop(t, f.c, "pod-a1", target)

	linked := filepath.Join(elsewhere, "steady.yaml")
	if err := os.WriteFile(linked, []byte(steadyFile+"---\n"+withSlice(addedSvc, "pod-b2")), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(f.c.ManifestDir, "steady.yaml")
	if err := os.Symlink(linked, link+".lnk"); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := os.Rename(link+".lnk", link); err != nil {
		t.Fatal(err)
	}
	f.answering(t, addedSvc)
	took := time.Since(begin)
	// An edit of the target, in its own directory, is seen as fast.
	begin = time.Now()
	if err := os.WriteFile(linked, []byte(steadyFile+"---\n"+withSlice(addedSvc, "pod-b2")+"---\n"+withSlice(goneSvc, "pod-b2")), 0o644); err != nil {
		t.Fatal(err)
	}
	f.answering(t, goneSvc)
	edited := time.Since(begin)

	// The target goes away: the link dangles. A new dangling link beside it too.
	if err := os.Rename(linked, linked+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(elsewhere, "missing.yaml"), filepath.Join(f.c.ManifestDir, "extra.yaml")); err != nil {
		t.Fatal(err)
	}
	f.requireLog(t,
		link+" is a symlink to "+linked+", which does not exist; the objects the file had are kept",
		"extra.yaml is a symlink to "+filepath.Join(elsewhere, "missing.yaml")+", which does not exist")
	time.Sleep(2 * time.Second) // the fault lasts: steady is served from a dangling link
	f.answering(t, addedSvc)
	if err := os.Rename(linked+".moved", linked); err != nil {
		t.Fatal(err)
	}
	f.report(t, loop, took, fmt.Sprintf("target-edit=%v", edited.Round(time.Millisecond)))
}

// testFaultDirectoryRemoved: the manifest directory removed for a while is a source
// unavailable, not one without Services: everything stays programmed. Recreated and
// filled file by file, it is read once filled, and watched again.
func testFaultDirectoryRemoved(t *testing.T, f *faultCase) {
	write := func(name, content string) {
		t.Helper()
		if err := f.c.WriteManifest(name, content); err != nil {
			t.Fatal(err)
		}
	}
	write("nodes", nodesYAML())
	write("steady", withSlice(steadySvc, "pod-a2", "pod-b1"))
	f.startProxy(t)
	target := f.answering(t, steadySvc)
	loop := startClientLoop(t, f.c, "pod-a1", target)

	if err := os.RemoveAll(f.c.ManifestDir); err != nil {
		t.Fatal(err)
	}
	f.requireLog(t, "The manifests directory is unavailable; keeping every object delivered so far")
	time.Sleep(5 * time.Second) // the fault lasts
	if err := os.Mkdir(f.c.ManifestDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Filled again file by file, as a copy from elsewhere does, slowly.
	begin := time.Now()
	write("nodes", nodesYAML())
	time.Sleep(300 * time.Millisecond)
	write("steady", withSlice(steadySvc, "pod-a2", "pod-b1"))
	time.Sleep(300 * time.Millisecond)
	write("added", withSlice(addedSvc, "pod-b2"))
	f.answering(t, addedSvc)
	took := time.Since(begin)
	f.requireLog(t, "Watching the manifests directory again")

	// Watched again: a change shows in about a second, not at the 10 s rescan.
	begin = time.Now()
	write("gone", withSlice(goneSvc, "pod-b2"))
	f.answering(t, goneSvc)
	watched := time.Since(begin)
	if watched > scaled(5*time.Second) {
		t.Errorf("a file written in the recreated directory took %v to be programmed: the directory is not watched", watched)
	}
	f.report(t, loop, took, fmt.Sprintf("next-change=%v", watched.Round(time.Millisecond)))
}

func testFaultStateDirReadOnly(t *testing.T, f *faultCase) {
	f.stateDirFault(t, "read-only file system",
		func() error { return mountCmd("-o", "remount,ro", f.c.StateDir) },
		func() error { return mountCmd("-o", "remount,rw", f.c.StateDir) })
}

func testFaultStateDirFull(t *testing.T, f *faultCase) {
	filler := filepath.Join(f.c.StateDir, "filler")
	f.stateDirFault(t, "no space left on device",
		func() error { return fillUp(filler) },
		func() error { return os.Remove(filler) })
}

func mountCmd(args ...string) error {
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("mount %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// fillUp writes path until the file system is full.
func fillUp(path string) error {
	fh, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() { _ = fh.Close() }()
	block := make([]byte, 4096)
	for {
		if _, err := fh.Write(block); err != nil {
			if strings.Contains(err.Error(), "no space left on device") {
				return nil
			}
			return err
		}
	}
}

// stateDirFault runs kproxy on a state directory that is a small tmpfs of its own,
// and breaks it twice. First while kproxy runs: a Service added then must get a clear
// error naming it, steady keeps answering and takes endpoint changes, and once the
// directory is repaired the new Service is programmed. Then across a restart: kproxy
// starts on the broken directory, serves what is saved and reports the next new
// Service, which is programmed after a restart on the repaired directory (a container
// whose volume was read-only gets its writable one with a new container too). No
// two Services ever hold the same ClusterIP or NodePort, and what a Service holds
// never changes.
func (f *faultCase) stateDirFault(t *testing.T, wantErr string, breakIt, repair func() error) {
	if err := mountCmd("-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", f.c.StateDir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if f.proxy != nil {
			f.proxy.Kill()
		}
		_ = repair()
		if out, err := exec.Command("umount", f.c.StateDir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", f.c.StateDir, err, out)
		}
	})
	nodePort := func(s cluster.Service) cluster.Service { s.Type = "NodePort"; return s }
	steady, added, gone := nodePort(steadySvc), nodePort(addedSvc), nodePort(goneSvc)
	write := func(name, content string) {
		t.Helper()
		if err := f.c.WriteManifest(name, content); err != nil {
			t.Fatal(err)
		}
	}
	wantLog := func(svc cluster.Service) []string {
		return []string{"service " + svc.Namespace + "/" + svc.Name + ": the allocations cannot be saved in the state directory " + f.c.StateDir, wantErr}
	}
	restart := func() {
		t.Helper()
		if err := f.proxy.Stop(); err != nil {
			t.Logf("stopping kproxy: %v", err)
		}
		f.startProxy(t)
	}
	write("nodes", nodesYAML())
	write("steady", withSlice(steady, "pod-a2", "pod-b1"))
	f.startProxy(t)
	target := f.answering(t, steady)
	before := f.allocations(t)
	loop := startClientLoop(t, f.c, "pod-a1", target)

	if err := breakIt(); err != nil {
		t.Fatal(err)
	}
	write("added", withSlice(added, "pod-b2"))
	f.requireLog(t, wantLog(added)...)
	// steady is not held up: an endpoint change goes through (a second slice, so the
	// loop's endpoints stay; pod-b2 must start answering too).
	second := slice(steady, "pod-b2")
	second.Name = "steady-2"
	write("eps-steady", second.YAML())
	f.waitBackend(t, target, "pod-b2")
	time.Sleep(4 * time.Second) // the fault lasts, through kproxy's retries (after 1 s, 2 s)
	if n := strings.Count(f.proxy.Logs(), wantLog(added)[0]); n != 1 {
		t.Errorf("the error about e2e/added was logged %d times, want once (the same problem is reported once)", n)
	}
	if err := repair(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	f.answering(t, added)
	took := time.Since(begin)
	after := f.allocations(t)
	if !slices.Equal(after[ns+"/steady"], before[ns+"/steady"]) {
		t.Errorf("steady's allocation changed through the fault: %v -> %v", before[ns+"/steady"], after[ns+"/steady"])
	}
	requireDistinct(t, after)

	// Across restarts.
	if err := breakIt(); err != nil {
		t.Fatal(err)
	}
	write("gone", withSlice(gone, "pod-a2"))
	restart()
	f.requireLog(t, wantLog(gone)...)
	f.answering(t, added)
	if err := repair(); err != nil {
		t.Fatal(err)
	}
	restart()
	f.answering(t, gone)
	final := f.allocations(t)
	requireDistinct(t, final)
	delete(final, ns+"/gone")
	if !maps.EqualFunc(final, after, slices.Equal) {
		t.Errorf("allocations changed across restarts:\nbefore %v\nafter  %v", after, final)
	}
	f.report(t, loop, took)
}

// waitBackend waits until target is answered by backend among others.
func (f *faultCase) waitBackend(t *testing.T, target, backend string) {
	t.Helper()
	err := f.c.WaitFor(func() error {
		got := cluster.Spread(f.c.Request("pod-a1", "tcp", target, 12, cluster.Timeout(time.Second)))
		if got[backend] == 0 {
			return fmt.Errorf("%s answered by %v, not yet by %s", target, got, backend)
		}
		return nil
	}, faultRecover)
	if err != nil {
		t.Fatal(err)
	}
}

// allocations reads kproxy's state file: every owner's ClusterIPs and its NodePorts
// ("ip:10.96.0.5", "port:TCP/80=30123"), sorted.
func (f *faultCase) allocations(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.c.StateDir, "allocations.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sf struct {
		Owners map[string]struct {
			IPs   []string       `json:"ips"`
			Ports map[string]int `json:"ports"`
		} `json:"owners"`
	}
	if err := json.Unmarshal(b, &sf); err != nil {
		t.Fatalf("allocations.json: %v", err)
	}
	out := map[string][]string{}
	for owner, o := range sf.Owners {
		var held []string
		for _, ip := range o.IPs {
			held = append(held, "ip:"+ip)
		}
		for key, p := range o.Ports {
			held = append(held, fmt.Sprintf("port:%s=%d", key, p))
		}
		slices.Sort(held)
		out[owner] = held
	}
	return out
}

// requireDistinct fails if two owners hold the same IP or NodePort.
func requireDistinct(t *testing.T, alloc map[string][]string) {
	t.Helper()
	holder := map[string]string{}
	for owner, held := range alloc {
		for _, h := range held {
			what := h
			if i := strings.Index(h, "="); strings.HasPrefix(h, "port:") && i > 0 {
				what = "nodePort " + h[i+1:]
			}
			if prev, dup := holder[what]; dup {
				t.Errorf("%s is held by %s and %s", what, prev, owner)
			}
			holder[what] = owner
		}
	}
}
