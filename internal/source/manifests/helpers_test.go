package manifests

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// recorder is a model.Handler that keeps what it was given and a log of the calls.
type recorder struct {
	mu       sync.Mutex
	services map[string]*v1.Service
	slices   map[string]*discovery.EndpointSlice
	node     *v1.Node
	calls    []string
	synced   bool
}

func newRecorder() *recorder {
	return &recorder{services: map[string]*v1.Service{}, slices: map[string]*discovery.EndpointSlice{}}
}

func (r *recorder) record(call string, fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn()
	r.calls = append(r.calls, call)
}

func (r *recorder) OnServiceUpsert(s *v1.Service) {
	r.record("upsert service "+s.Namespace+"/"+s.Name, func() { r.services[s.Namespace+"/"+s.Name] = s })
}
func (r *recorder) OnServiceDelete(ns, name string) {
	r.record("delete service "+ns+"/"+name, func() { delete(r.services, ns+"/"+name) })
}
func (r *recorder) OnEndpointSliceUpsert(s *discovery.EndpointSlice) {
	r.record("upsert endpointslice "+s.Namespace+"/"+s.Name, func() { r.slices[s.Namespace+"/"+s.Name] = s })
}
func (r *recorder) OnEndpointSliceDelete(ns, name string) {
	r.record("delete endpointslice "+ns+"/"+name, func() { delete(r.slices, ns+"/"+name) })
}
func (r *recorder) OnNodeUpsert(n *v1.Node) { r.record("upsert node "+n.Name, func() { r.node = n }) }
func (r *recorder) OnNodeDelete(name string) {
	r.record("delete node "+name, func() { r.node = nil })
}
func (r *recorder) OnSynced() { r.record("synced", func() { r.synced = true }) }

func (r *recorder) service(nn string) *v1.Service {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.services[nn]
}

func (r *recorder) callLog() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// callsSince returns the calls after the first n.
func (r *recorder) callsSince(n int) []string { return r.callLog()[n:] }

// running is a Source whose Run goroutine a test controls.
type running struct {
	src  *Source
	rec  *recorder
	stop func()
}

func defaultOptions(dir, state string) Options {
	return Options{
		Dir: dir, StateDir: state, NodeName: "node-1",
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd00:10:96::/112")},
	}
}

// start runs a Source until the test ends (or stop is called) and waits for OnSynced.
func start(t *testing.T, opts Options) *running {
	t.Helper()
	rec := newRecorder()
	src, err := New(opts, rec)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	waitFor(t, "initial sync", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.synced })
	return &running{src: src, rec: rec, stop: stop}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	begin := time.Now()
	for time.Since(begin) < 5*time.Second {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// writeFile writes a manifest the way editors do: a temp file renamed into place.
func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func errorsText(s *Source) string {
	var b strings.Builder
	for _, e := range s.Errors() {
		fmt.Fprintln(&b, e.Error())
	}
	return b.String()
}

func service(name, specYAML string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\nspec:\n%s", name, specYAML)
}
