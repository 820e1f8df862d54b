package apiserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// recorder is a model.Handler that writes down every call as one line.
type recorder struct {
	mu       sync.Mutex
	events   []string
	synced   int
	withMF   []string // objects that arrived with managedFields
	syncedAt int      // len(events) when OnSynced was called
}

func (r *recorder) add(ev string, meta metav1.Object) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	if meta != nil && len(meta.GetManagedFields()) > 0 {
		r.withMF = append(r.withMF, ev)
	}
}

func (r *recorder) OnServiceUpsert(s *v1.Service) { r.add("svc+ "+s.Namespace+"/"+s.Name, s) }
func (r *recorder) OnServiceDelete(ns, name string) {
	r.add("svc- "+ns+"/"+name, nil)
}
func (r *recorder) OnEndpointSliceUpsert(s *discovery.EndpointSlice) {
	r.add("eps+ "+s.Namespace+"/"+s.Name, s)
}
func (r *recorder) OnEndpointSliceDelete(ns, name string) { r.add("eps- "+ns+"/"+name, nil) }
func (r *recorder) OnNodeUpsert(n *v1.Node)               { r.add("node+ "+n.Name, n) }
func (r *recorder) OnNodeDelete(name string)              { r.add("node- "+name, nil) }
func (r *recorder) OnSynced() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.synced++
	r.syncedAt = len(r.events)
}

func (r *recorder) snapshot() (events []string, synced, syncedAt int, withMF []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events), r.synced, r.syncedAt, slices.Clone(r.withMF)
}

// waitFor polls until the recorder holds want (in any order after the events
// already seen) or fails the test.
func (r *recorder) waitFor(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		events, _, _, _ := r.snapshot()
		missing := []string{}
		for _, w := range want {
			if !slices.Contains(events, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("handler never got %v; got %v", missing, events)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var managed = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}

func service(ns, name string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ManagedFields: managed},
		Spec:       v1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []v1.ServicePort{{Port: 80}}},
	}
}

func endpointSlice(ns, name, svc string) *discovery.EndpointSlice {
	return &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ManagedFields: managed,
			Labels: map[string]string{discovery.LabelServiceName: svc}},
		AddressType: discovery.AddressTypeIPv4,
	}
}

// node is node1, the Node the Source runs on.
func node() *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", ManagedFields: managed}}
}

// start runs a Source on client until the test ends.
func start(t *testing.T, client *fake.Clientset, rec *recorder) (*Source, chan error) {
	t.Helper()
	s := newWithClient(Options{NodeName: "node1", ResyncPeriod: time.Hour}, client, "fake", rec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of its context ending")
		}
	})
	return s, done
}

func TestInitialStateThenSynced(t *testing.T) {
	client := fake.NewClientset(
		service("default", "web"),
		endpointSlice("default", "web-abc", "web"),
		node(),
	)
	rec := &recorder{}
	s, _ := start(t, client, rec)
	rec.waitFor(t, "svc+ default/web", "eps+ default/web-abc", "node+ node1")
	deadline := time.Now().Add(5 * time.Second)
	for !s.Synced() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	events, synced, syncedAt, withMF := rec.snapshot()
	if synced != 1 || !s.Synced() {
		t.Fatalf("OnSynced called %d times (Synced() = %v), want once", synced, s.Synced())
	}
	// Every object of the initial lists must reach the handler before OnSynced, or
	// the first sync would program a partial view.
	if syncedAt < 3 {
		t.Errorf("OnSynced came after %d events, want all 3 initial objects first: %v", syncedAt, events)
	}
	if len(withMF) > 0 {
		t.Errorf("managedFields reached the handler for %v; the transform should strip them", withMF)
	}
}

func TestChangesAfterSync(t *testing.T) {
	client := fake.NewClientset(service("default", "web"), node())
	rec := &recorder{}
	s, _ := start(t, client, rec)
	rec.waitFor(t, "svc+ default/web", "node+ node1")
	waitSynced(t, s)
	ctx := context.Background()

	if _, err := client.DiscoveryV1().EndpointSlices("default").Create(ctx, endpointSlice("default", "web-1", "web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "eps+ default/web-1")
	if err := client.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.DiscoveryV1().EndpointSlices("default").Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n := node()
	n.Labels = map[string]string{"topology.kubernetes.io/zone": "z1"}
	if _, err := client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "svc- default/web", "eps- default/web-1")
	deadline := time.Now().Add(5 * time.Second)
	for {
		events, synced, _, withMF := rec.snapshot()
		if countOf(events, "node+ node1") >= 2 {
			if synced != 1 {
				t.Errorf("OnSynced called %d times, want once", synced)
			}
			if len(withMF) > 0 {
				t.Errorf("managedFields reached the handler for %v", withMF)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node label change never reached the handler: %v", events)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := client.CoreV1().Nodes().Delete(ctx, "node1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "node- node1")
}

func waitSynced(t *testing.T, s *Source) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !s.Synced() {
		if time.Now().After(deadline) {
			t.Fatal("source never synced")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func countOf(events []string, ev string) int {
	n := 0
	for _, e := range events {
		if e == ev {
			n++
		}
	}
	return n
}

// TestSelectors checks the list options sent to the API server: the fake clientset
// does not apply field selectors itself, so the requests are what can be checked here
// (test/e2e checks the real server's filtering).
func TestSelectors(t *testing.T) {
	client := fake.NewClientset()
	var mu sync.Mutex
	got := map[string]string{}
	client.PrependReactor("list", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.ListAction).GetListRestrictions()
		mu.Lock()
		got[a.GetResource().Resource] = fmt.Sprintf("labels=%s fields=%s", r.Labels, r.Fields)
		mu.Unlock()
		return false, nil, nil
	})
	rec := &recorder{}
	s, _ := start(t, client, rec)
	waitSynced(t, s)
	mu.Lock()
	defer mu.Unlock()
	want := map[string]string{
		"services":       "labels=!service.kubernetes.io/service-proxy-name fields=spec.clusterIP!=None",
		"endpointslices": "labels=!service.kubernetes.io/headless fields=",
		"nodes":          "labels= fields=metadata.name=node1",
	}
	for res, w := range want {
		if got[res] != w {
			t.Errorf("list %s: %q, want %q", res, got[res], w)
		}
	}
}

// TestUnreachableAtStart: while every list fails, the handler hears nothing and
// OnSynced is never called; once the lists work, the source syncs without restarting.
func TestUnreachableAtStart(t *testing.T) {
	client := fake.NewClientset(service("default", "web"), node())
	var mu sync.Mutex
	down := true
	failures := 0
	client.PrependReactor("list", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			failures++
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	rec := &recorder{}
	s, done := start(t, client, rec)
	time.Sleep(1500 * time.Millisecond)
	events, synced, _, _ := rec.snapshot()
	if len(events) != 0 || synced != 0 || s.Synced() {
		t.Fatalf("with the API down the handler got %v and %d OnSynced calls; want nothing", events, synced)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned while the API server was down: %v", err)
	default:
	}
	mu.Lock()
	if failures < 3 {
		t.Errorf("only %d list attempts in 1.5s; the reflectors should keep retrying", failures)
	}
	down = false
	mu.Unlock()
	// client-go's backoff starts at 800ms and grows; within a few seconds it retries.
	deadline := time.Now().Add(10 * time.Second)
	for !s.Synced() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	events, synced, _, _ = rec.snapshot()
	if synced != 1 || !strings.Contains(strings.Join(events, ","), "svc+ default/web") {
		t.Fatalf("after the API came back: OnSynced %d times, events %v; want the Service and one OnSynced", synced, events)
	}
}

func TestRunReturnsWhenContextEndsBeforeSync(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	rec := &recorder{}
	s := newWithClient(Options{NodeName: "node1"}, client, "fake", rec)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.Run(ctx); err != nil {
		t.Errorf("Run: %v, want nil when the context ends", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Run took %v to return after its context ended", took)
	}
	if _, synced, _, _ := rec.snapshot(); synced != 0 {
		t.Errorf("OnSynced called %d times without a successful list", synced)
	}
}

func TestRestConfig(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if Configured(Options{}) {
		t.Error("Configured with no kubeconfig, master or in-cluster environment")
	}
	if _, err := restConfig(Options{}); err == nil {
		t.Error("restConfig with nothing configured: want an error")
	}
	cfg, err := restConfig(Options{Master: "https://127.0.0.1:6443", QPS: 7, Burst: 13, ContentType: "application/vnd.kubernetes.protobuf"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://127.0.0.1:6443" || cfg.QPS != 7 || cfg.Burst != 13 {
		t.Errorf("host %s qps %v burst %d; want https://127.0.0.1:6443, 7, 13", cfg.Host, cfg.QPS, cfg.Burst)
	}
	if cfg.ContentType != "application/vnd.kubernetes.protobuf" || cfg.AcceptContentTypes != "application/vnd.kubernetes.protobuf,application/json" {
		t.Errorf("content type %q accept %q", cfg.ContentType, cfg.AcceptContentTypes)
	}
	if !strings.HasPrefix(cfg.UserAgent, "kproxy") {
		t.Errorf("user agent %q, want it to start with kproxy", cfg.UserAgent)
	}
	if _, err := New(Options{Kubeconfig: "/nonexistent/kubeconfig", NodeName: "n"}, &recorder{}); err == nil || !strings.Contains(err.Error(), "/nonexistent/kubeconfig") {
		t.Errorf("New with a missing kubeconfig: %v, want an error naming the file", err)
	}
	if _, err := New(Options{Master: "https://127.0.0.1:6443"}, &recorder{}); err == nil {
		t.Error("New without a node name: want an error")
	}
}

func TestSlimKeepsOnlyWhatKproxyReads(t *testing.T) {
	mf := []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", ManagedFields: mf,
		Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
		Spec: v1.ServiceSpec{ClusterIP: "10.0.0.1"}}
	slice := &discovery.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "e", ManagedFields: mf,
		Labels:      map[string]string{discovery.LabelServiceName: "s"},
		Annotations: map[string]string{lastChangeTriggerTime: "2026-01-01T00:00:00Z", "other": "x"}}}
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{v1.LabelTopologyZone: "z"}},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "192.168.0.1"}},
			Images: []v1.ContainerImage{{Names: []string{"big"}}}}}
	for _, o := range []any{svc, slice, node} {
		if _, err := slim(o); err != nil {
			t.Fatal(err)
		}
	}
	if svc.ManagedFields != nil || svc.Annotations != nil || svc.Spec.ClusterIP != "10.0.0.1" {
		t.Errorf("Service after slim: %+v", svc.ObjectMeta)
	}
	if slice.ManagedFields != nil || len(slice.Annotations) != 1 || slice.Annotations[lastChangeTriggerTime] == "" ||
		slice.Labels[discovery.LabelServiceName] != "s" {
		t.Errorf("EndpointSlice after slim: %+v", slice.ObjectMeta)
	}
	if node.Status.Images != nil || len(node.Status.Addresses) != 1 || node.Labels[v1.LabelTopologyZone] != "z" {
		t.Errorf("Node after slim: %+v %+v", node.ObjectMeta, node.Status)
	}
}

// lastChangeTriggerTime is the annotation slim keeps (model.LastChangeTriggerTimeAnnotation).
const lastChangeTriggerTime = "endpoints.kubernetes.io/last-change-trigger-time"
