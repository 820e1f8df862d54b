package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// apiFirstSync bounds kproxy's start-up: list+watch of three resources and a sync.
const apiFirstSync = 30 * time.Second

// apiPropagation bounds an API write reaching the kernel.
const apiPropagation = 5 * time.Second

var apiHTTP = []v1.ServicePort{tcpPort("http", 80)}

// testClusterIPFromPod: a Service whose ClusterIP the API server allocated, with a
// hand-written slice of all four pods: a pod reaches every one, unmasqueraded.
func (a *apiEnv) testClusterIPFromPod(t *testing.T) {
	a.dumpOnFailure(t, "web")
	svc := createService(t, a.client, newService("web", v1.ServiceTypeClusterIP, apiHTTP...))
	putSlice(t, a.client, newSlice("web", "web-1", apiHTTP, allPods...))
	target := hostPort(svc.Spec.ClusterIP, 80)
	took := waitBackends(t, a.pod, "pod-a1 -> web", target, apiFirstSync, allPods...)
	t.Logf("all four backends answer at %s %v after the writes (includes kproxy start-up)", target, took.Round(time.Millisecond))
	_, _, seen := sample(a.pod, target, 40)
	for backend, s := range seen {
		if backend == "pod-a1" {
			continue // hairpin: pod-a1 reaching itself is masqueraded, like upstream
		}
		if host, _, _ := net.SplitHostPort(s); host != "10.244.1.11" {
			t.Errorf("pod-a1 -> web: %s saw source %s, want the pod's own 10.244.1.11", backend, s)
		}
	}
}

// testNodePortFromOutside: a NodePort the API server allocated answers from ext,
// masqueraded to node1's address.
func (a *apiEnv) testNodePortFromOutside(t *testing.T) {
	a.dumpOnFailure(t, "np")
	svc := createService(t, a.client, newService("np", v1.ServiceTypeNodePort, apiHTTP...))
	np := svc.Spec.Ports[0].NodePort
	if np < 30000 || np > 32767 {
		t.Fatalf("API server allocated NodePort %d, outside 30000-32767", np)
	}
	putSlice(t, a.client, newSlice("np", "np-1", apiHTTP, "pod-b1", "pod-b2"))
	target := hostPort(cluster.Node1IP, int(np))
	waitBackends(t, a.ext, "ext -> node1 NodePort", target, apiPropagation, "pod-b1", "pod-b2")
	_, _, seen := sample(a.ext, target, 20)
	for backend, s := range seen {
		if host, _, _ := net.SplitHostPort(s); !node1Addrs[host] {
			t.Errorf("ext -> NodePort %d: %s saw source %s, want node1's address (masqueraded)", np, backend, s)
		}
	}
}

// testEndpointsScaledAndMerged: one slice scaled 1 -> 3 endpoints, then a second
// slice of the same Service overlapping the first: the endpoints are merged and the
// shared one counts once; deleting the second slice scales back down.
func (a *apiEnv) testEndpointsScaledAndMerged(t *testing.T) {
	a.dumpOnFailure(t, "scale")
	svc := createService(t, a.client, newService("scale", v1.ServiceTypeClusterIP, apiHTTP...))
	target := hostPort(svc.Spec.ClusterIP, 80)
	putSlice(t, a.client, newSlice("scale", "scale-1", apiHTTP, "pod-a1"))
	waitBackends(t, a.pod, "1 endpoint", target, apiPropagation, "pod-a1")

	putSlice(t, a.client, newSlice("scale", "scale-1", apiHTTP, "pod-a1", "pod-a2", "pod-b1"))
	took := waitBackends(t, a.pod, "scaled to 3", target, apiPropagation, "pod-a1", "pod-a2", "pod-b1")
	t.Logf("scaled 1 -> 3 endpoints in %v", took.Round(time.Millisecond))

	putSlice(t, a.client, newSlice("scale", "scale-2", apiHTTP, "pod-b1", "pod-b2"))
	waitBackends(t, a.pod, "two slices", target, apiPropagation, allPods...)
	if n := sepChains(a.c.IPTablesSave(cluster.KproxyNode), ns+"/scale:http"); n != 4 {
		t.Errorf("two slices with pod-b1 in both: %d KUBE-SEP chains for %s/scale:http, want 4 (each endpoint once)", n, ns)
	}
	deleteSlice(t, a.client, "scale-2")
	waitBackends(t, a.pod, "second slice deleted", target, apiPropagation, "pod-a1", "pod-a2", "pod-b1")
}

// testSliceNewEndpoint: a slice updated in place to a different endpoint: only the
// new one answers.
func (a *apiEnv) testSliceNewEndpoint(t *testing.T) {
	a.dumpOnFailure(t, "swap")
	svc := createService(t, a.client, newService("swap", v1.ServiceTypeClusterIP, apiHTTP...))
	target := hostPort(svc.Spec.ClusterIP, 80)
	putSlice(t, a.client, newSlice("swap", "swap-1", apiHTTP, "pod-a2"))
	waitBackends(t, a.pod, "before", target, apiPropagation, "pod-a2")
	putSlice(t, a.client, newSlice("swap", "swap-1", apiHTTP, "pod-b2"))
	took := waitBackends(t, a.pod, "after the update", target, apiPropagation, "pod-b2")
	t.Logf("pod-a2 replaced by pod-b2 in %v", took.Round(time.Millisecond))
}

// testEndpointsGoneThenServiceDeleted: the slice deleted -> the ClusterIP rejects at
// once (REJECT, not a timeout); the Service deleted -> its rules are gone and the
// packet follows the node's routes to the LAN's dead end.
func (a *apiEnv) testEndpointsGoneThenServiceDeleted(t *testing.T) {
	a.dumpOnFailure(t, "gone")
	svc := createService(t, a.client, newService("gone", v1.ServiceTypeClusterIP, apiHTTP...))
	target := hostPort(svc.Spec.ClusterIP, 80)
	putSlice(t, a.client, newSlice("gone", "gone-1", apiHTTP, "pod-a1"))
	waitBackends(t, a.pod, "before", target, apiPropagation, "pod-a1")

	deleteSlice(t, a.client, "gone-1")
	waitError(t, a.pod, "slice deleted", target, "refused", apiPropagation)
	if !strings.Contains(a.c.IPTablesSave(cluster.KproxyNode), ns+"/gone:http has no endpoints") {
		t.Errorf("no %q rule after the slice was deleted", ns+"/gone:http has no endpoints")
	}

	deleteService(t, a.client, "gone")
	err := cluster.WaitFor(func() error {
		if strings.Contains(a.c.IPTablesSave(cluster.KproxyNode), ns+"/gone") {
			return fmt.Errorf("rules for %s/gone still in node1", ns)
		}
		return nil
	}, apiPropagation)
	if err != nil {
		t.Fatal(err)
	}
	if r := a.pod.TCP(target, time.Second); r.Error != "unreachable" {
		t.Errorf("Service deleted: request to %s got backend %q error %q, want unreachable (no rule, routed to the dead end)", target, r.Backend, r.Error)
	}
}

// testSelectors: the real API server applies kproxy's selectors: a Service another
// proxy owns and a headless Service's slices never reach kproxy; taking the label
// off brings the Service in.
func (a *apiEnv) testSelectors(t *testing.T) {
	a.dumpOnFailure(t, "other-proxy", "headless", "marker")
	other := newService("other-proxy", v1.ServiceTypeClusterIP, apiHTTP...)
	other.Labels = map[string]string{"service.kubernetes.io/service-proxy-name": "someone-else"}
	other = createService(t, a.client, other)
	putSlice(t, a.client, newSlice("other-proxy", "other-proxy-1", apiHTTP, "pod-a1"))

	headless := newService("headless", v1.ServiceTypeClusterIP, apiHTTP...)
	headless.Spec.ClusterIP = v1.ClusterIPNone
	createService(t, a.client, headless)
	hs := newSlice("headless", "headless-1", apiHTTP, "pod-a1")
	hs.Labels[v1.IsHeadlessService] = ""
	putSlice(t, a.client, hs)

	// A Service written after the others: once its rules are in, kproxy has seen
	// the earlier writes too (one watch stream per resource, in order).
	marker := createService(t, a.client, newService("marker", v1.ServiceTypeClusterIP, apiHTTP...))
	putSlice(t, a.client, newSlice("marker", "marker-1", apiHTTP, "pod-a2"))
	waitBackends(t, a.pod, "marker", hostPort(marker.Spec.ClusterIP, 80), apiPropagation, "pod-a2")

	dump := a.c.IPTablesSave(cluster.KproxyNode)
	for _, name := range []string{"other-proxy", "headless"} {
		if strings.Contains(dump, ns+"/"+name) {
			t.Errorf("kproxy programmed %s/%s, which its selectors exclude:\n%s", ns, name, cluster.RulesMatching(dump, ns+"/"+name))
		}
	}
	target := hostPort(other.Spec.ClusterIP, 80)
	if r := a.pod.TCP(target, time.Second); r.Error != "unreachable" {
		t.Errorf("other-proxy's ClusterIP: backend %q error %q, want unreachable (no rules)", r.Backend, r.Error)
	}
	ctx, cancel := apiCtx()
	defer cancel()
	patch := []byte(`{"metadata":{"labels":{"service.kubernetes.io/service-proxy-name":null}}}`)
	if _, err := a.client.CoreV1().Services(ns).Patch(ctx, "other-proxy", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBackends(t, a.pod, "label removed", target, apiPropagation, "pod-a1")
}

// testNodeLabelChange: topology hints pick the endpoints of node1's zone; relabelling
// the Node object moves the traffic to the other zone's endpoint.
func (a *apiEnv) testNodeLabelChange(t *testing.T) {
	a.dumpOnFailure(t, "zonal")
	svc := createService(t, a.client, newService("zonal", v1.ServiceTypeClusterIP, apiHTTP...))
	target := hostPort(svc.Spec.ClusterIP, 80)
	s := newSlice("zonal", "zonal-1", apiHTTP, "pod-a1", "pod-b1")
	for i, zone := range []string{"zone-a", "zone-b"} {
		z := zone
		s.Endpoints[i].Zone = &z
		s.Endpoints[i].Hints = &discovery.EndpointHints{ForZones: []discovery.ForZone{{Name: zone}}}
	}
	putSlice(t, a.client, s)
	waitBackends(t, a.pod, "node1 in zone-a", target, apiPropagation, "pod-a1")

	setZone := func(zone string) {
		ctx, cancel := apiCtx()
		defer cancel()
		patch := []byte(fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, zoneLabel, zone))
		if _, err := a.client.CoreV1().Nodes().Patch(ctx, "node1", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setZone("zone-b")
	t.Cleanup(func() { setZone("zone-a") })
	took := waitBackends(t, a.pod, "node1 relabelled to zone-b", target, apiPropagation, "pod-b1")
	t.Logf("Node label change reached the kernel in %v", took.Round(time.Millisecond))
}
