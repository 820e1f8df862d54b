package manifests

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func itoa(i int) string { return strconv.Itoa(i) }

func TestMalformedFileCostsNothing(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", multiDoc)
	r := start(t, defaultOptions(dir, t.TempDir()))
	n := len(r.rec.callLog())

	// A brand-new broken file: an error naming it, nothing delivered or removed.
	writeFile(t, dir, "broken.yaml", service("x", "  ports: [{port: 80}]\n")+"\n---\nkind: Service\n  bad: [indent\n")
	waitFor(t, "the parse error", func() bool { return strings.Contains(errorsText(r.src), "broken.yaml") })
	if msg := errorsText(r.src); !strings.Contains(msg, "document 2 (line 9)") {
		t.Errorf("error should name the document and its line: %s", msg)
	}
	if calls := r.rec.callsSince(n); len(calls) != 0 {
		t.Errorf("a broken file caused calls %v", calls)
	}
	if r.rec.service("default/x") != nil {
		t.Errorf("the valid first document of a broken file was delivered")
	}
	// A later change to a good file still goes through.
	writeFile(t, dir, "c.yaml", service("c", "  ports: [{port: 80}]\n"))
	waitFor(t, "c", func() bool { return r.rec.service("default/c") != nil })
	// Removing the broken file clears the error.
	if err := os.Remove(filepath.Join(dir, "broken.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the error to clear", func() bool { return len(r.src.Errors()) == 0 })
}

func TestEditThenBreakKeepsOldObjects(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", service("a", "  ports: [{port: 80}]\n")+"---\n"+service("b", "  ports: [{port: 80}]\n"))
	r := start(t, defaultOptions(dir, t.TempDir()))
	ipA := r.rec.service("default/a").Spec.ClusterIP

	writeFile(t, dir, "a.yaml", service("a", "  ports: [{port: 81}]\n")+"---\n"+service("b", "  ports: [{port: 80}]\n"))
	waitFor(t, "the edit", func() bool { return r.rec.service("default/a").Spec.Ports[0].Port == 81 })
	if got := r.rec.service("default/a").Spec.ClusterIP; got != ipA {
		t.Errorf("an edit moved a from %s to %s", ipA, got)
	}
	n := len(r.rec.callLog())
	writeFile(t, dir, "a.yaml", service("a", "  ports: [{port: 82}]\n")+"---\n"+"apiVersion: v1\nkind: Service\n metadata: {name: b\n")
	waitFor(t, "the parse error", func() bool { return strings.Contains(errorsText(r.src), "a.yaml") })
	time.Sleep(300 * time.Millisecond) // give a wrong delivery time to happen
	if calls := r.rec.callsSince(n); len(calls) != 0 {
		t.Errorf("breaking a file caused calls %v", calls)
	}
	if r.rec.service("default/a").Spec.Ports[0].Port != 81 || r.rec.service("default/b") == nil {
		t.Errorf("the objects of the broken file changed")
	}
}

func TestRemovalDeletesAndReleases(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", multiDoc)
	writeFile(t, dir, "b.yaml", service("b", "  type: NodePort\n  ports: [{port: 80}]\n"))
	r := start(t, defaultOptions(dir, t.TempDir()))
	b := r.rec.service("default/b")
	ip, nodePort := netip.MustParseAddr(b.Spec.ClusterIP), int(b.Spec.Ports[0].NodePort)
	n := len(r.rec.callLog())

	if err := os.Remove(filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's deletion", func() bool { return r.rec.service("default/b") == nil })
	if calls := r.rec.callsSince(n); !slices.Equal(calls, []string{"delete service default/b"}) {
		t.Errorf("calls %v, want only b's deletion", calls)
	}
	if h, held := r.src.alloc.IPHolder(ip); held {
		t.Errorf("%s still held by %s", ip, h)
	}
	if h, held := r.src.alloc.NodePortHolder(nodePort); held {
		t.Errorf("nodePort %d still held by %s", nodePort, h)
	}
	// Another Service may now take them.
	writeFile(t, dir, "c.yaml", service("c", "  type: NodePort\n  clusterIP: "+ip.String()+"\n  ports: [{port: 80, nodePort: "+itoa(nodePort)+"}]\n"))
	waitFor(t, "c", func() bool { return r.rec.service("default/c") != nil })

	n = len(r.rec.callLog())
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a.yaml's objects to go", func() bool { return len(r.rec.callsSince(n)) == 3 })
	calls := r.rec.callsSince(n)
	slices.Sort(calls)
	if want := []string{"delete endpointslice default/web-1", "delete service default/web", "delete service kube-system/dns"}; !slices.Equal(calls, want) {
		t.Errorf("calls %v, want %v", calls, want)
	}
}

func TestCollisionsBetweenFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", service("a", "  type: NodePort\n  clusterIP: 10.96.0.10\n  ports: [{port: 80, nodePort: 30080}]\n"))
	writeFile(t, dir, "b.yaml", service("b", "  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n")+"---\n"+
		service("c", "  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n")+"---\n"+
		service("d", "  ports: [{port: 80}]\n"))
	writeFile(t, dir, "c.yaml", service("a", "  ports: [{port: 99}]\n"))
	r := start(t, defaultOptions(dir, t.TempDir()))
	msg := errorsText(r.src)
	for _, want := range []string{
		"service default/b: spec.clusterIP 10.96.0.10 is already allocated to service default/a",
		"service default/c: spec.ports[0].nodePort 30080 is already allocated to service default/a",
		"service default/a: also defined at " + filepath.Join(dir, "a.yaml"),
		filepath.Join(dir, "c.yaml") + " document 1 (line 1) is ignored",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("errors lack %q:\n%s", want, msg)
		}
	}
	if len(r.src.Errors()) != 3 {
		t.Errorf("want 3 errors, got:\n%s", msg)
	}
	if r.rec.service("default/b") != nil || r.rec.service("default/c") != nil {
		t.Errorf("a colliding Service was delivered")
	}
	if a := r.rec.service("default/a"); a == nil || a.Spec.Ports[0].Port != 80 {
		t.Errorf("default/a should come from a.yaml: %+v", a)
	}
	if r.rec.service("default/d") == nil {
		t.Errorf("the valid Service next to colliding ones was not delivered")
	}
	// Once a asks for another address, it gets that one and b gets a's old one.
	writeFile(t, dir, "a.yaml", service("a", "  type: NodePort\n  clusterIP: 10.96.0.11\n  ports: [{port: 80, nodePort: 30080}]\n"))
	waitFor(t, "b", func() bool { return r.rec.service("default/b") != nil })
	if got := r.rec.service("default/b").Spec.ClusterIP; got != "10.96.0.10" {
		t.Errorf("b got %s", got)
	}
	if got := r.rec.service("default/a").Spec.ClusterIP; got != "10.96.0.11" {
		t.Errorf("a got %s after asking for 10.96.0.11", got)
	}
}

func TestRejectedEditKeepsPreviousVersion(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", service("a", "  ports: [{port: 80}]\n")+"---\n"+service("b", "  ports: [{port: 80}]\n"))
	r := start(t, defaultOptions(dir, t.TempDir()))
	ipA := r.rec.service("default/a").Spec.ClusterIP
	n := len(r.rec.callLog())

	// a becomes invalid, b gets a misspelt field, c is new and invalid, d new and fine.
	writeFile(t, dir, "a.yaml", service("a", "  ports: [{port: 70000}]\n")+"---\n"+
		service("b", "  portz: [{port: 81}]\n  ports: [{port: 80}]\n")+"---\n"+
		service("c", "  clusterIP: 10.0.0.5\n  ports: [{port: 80}]\n")+"---\n"+
		service("d", "  ports: [{port: 80}]\n"))
	waitFor(t, "d", func() bool { return r.rec.service("default/d") != nil })
	if calls := r.rec.callsSince(n); !slices.Equal(calls, []string{"upsert service default/d"}) {
		t.Errorf("calls %v, want only d's upsert", calls)
	}
	msg := errorsText(r.src)
	for _, want := range []string{
		"service default/a: spec.ports[0].port: 70000 is not between 1 and 65535",
		`service default/b: unknown field "spec.portz"`,
		"service default/c: spec.clusterIP: 10.0.0.5 is outside the service-cluster-ip-range 10.96.0.0/12",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("errors lack %q:\n%s", want, msg)
		}
	}
	if got := r.rec.service("default/a"); got.Spec.Ports[0].Port != 80 || got.Spec.ClusterIP != ipA {
		t.Errorf("a's previous version should stay: %+v", got.Spec)
	}
	if h, _ := r.src.alloc.IPHolder(netip.MustParseAddr(ipA)); h != "default/a" {
		t.Errorf("a's address is held by %q while a is rejected", h)
	}

	// Fixing a delivers the fix with the same address and clears its error.
	writeFile(t, dir, "a.yaml", service("a", "  ports: [{port: 8080}]\n")+"---\n"+service("b", "  ports: [{port: 80}]\n"))
	waitFor(t, "a's fix", func() bool { return r.rec.service("default/a").Spec.Ports[0].Port == 8080 })
	if got := r.rec.service("default/a").Spec.ClusterIP; got != ipA {
		t.Errorf("a moved from %s to %s", ipA, got)
	}
	waitFor(t, "errors to clear", func() bool { return len(r.src.Errors()) == 0 })
}
