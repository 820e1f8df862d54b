package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/kproxy/kproxy/test/apiserver"
	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// badEnv is what TestBadInputAPI's modes share: the cluster, the API server with the
// objects, and kproxy's kubeconfig (the deploy/ ServiceAccount's token, so Events
// are written with exactly the RBAC that deploy/ grants).
type badEnv struct {
	c          *cluster.Cluster
	srv        *apiserver.Server
	client     kubernetes.Interface
	kubeconfig string
	// The addresses the cases send to, filled as the objects are created.
	goodIP, dupIP, bigIP, portsIP, longIP string
}

// The objects of the cases. The NodePort and the node's own port are held by a
// process in node1 (nodeSquatter) before kproxy starts.
const (
	squatNodePort = 30999
	nodeOwnPort   = 9999
	// bigBlock is a /22 that pod-a1 answers on as a whole (an address with a prefix on
	// lo makes the prefix local): 1,000 distinct endpoint addresses, one echoserver.
	bigBlock = "10.245.0.0/22"
)

// Names of the maximum length, 63 characters each.
var (
	longNS   = "ns-long-" + strings.Repeat("n", 55)
	longName = "svc-long-" + strings.Repeat("s", 54)
	longPort = "port-long-" + strings.Repeat("p", 53)
)

// TestBadInputAPI creates, next to a good Service, the unusual and the invalid
// objects of issue 16 through a real kube-apiserver, then runs kproxy on them in
// each mode: what the API server refuses is refused with a message naming the field;
// what it accepts works (real packets), and a NodePort another process holds is a
// Warning Event on the Node that names the port and the Service.
func TestBadInputAPI(t *testing.T) {
	requireKproxy(t)
	bin := apiServerBinaries(t)
	b := &badEnv{c: newCluster(t)}
	removeLink, err := b.c.LinkRootToNode(cluster.KproxyNode)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(removeLink)
	b.srv, err = apiserver.Start(apiserver.Options{BinDir: bin, Address: cluster.APIHostIP, Log: t})
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-apiserver log tail:\n%s", b.srv.APIServerLog(30))
			b.srv.CloseKeepLogs()
			return
		}
		b.srv.Close()
	})
	b.client = b.srv.Client
	applyDeploy(t, b.client)
	b.kubeconfig = filepath.Join(b.c.WorkDir, "kproxy.kubeconfig")
	if err := b.srv.WriteKubeconfig(b.kubeconfig, serviceAccountToken(t, b.client)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{ns, longNS} {
		if err := createNamespace(b.client, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := createNode(b.client, "node1", cluster.Node1IP, "10.244.1.0/24", nil); err != nil {
		t.Fatal(err)
	}
	if err := createNode(b.client, "node2", cluster.Node2IP, "10.244.2.0/24", nil); err != nil {
		t.Fatal(err)
	}
	// pod-a1 answers on all of bigBlock, and node1 routes it to pod-a1.
	if _, err := b.c.Exec("pod-a1", "ip", "addr", "add", bigBlock, "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.c.Exec(cluster.KproxyNode, "ip", "route", "add", bigBlock, "dev", "v-a1"); err != nil {
		t.Fatal(err)
	}
	// A process of node1 listens on the node's own port and on the NodePort to be.
	squatter, err := b.c.StartProcess(cluster.KproxyNode, "squatter", echoBin, "serve", "--name", "node1-own",
		"--tcp", fmt.Sprintf("%d,%d", nodeOwnPort, squatNodePort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(squatter.Kill)
	if err := cluster.WaitFor(func() error {
		if !strings.Contains(squatter.Logs(), "ready ") {
			return fmt.Errorf("node1's own listener not ready: %s", squatter.Logs())
		}
		return nil
	}, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	t.Run("APIRefuses", b.testAPIRefuses)
	b.createObjects(t)
	if t.Failed() {
		return
	}
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) { b.runMode(t, mode) })
	}
}

// testAPIRefuses: the invalid values never reach kproxy from a cluster, the API
// server refuses them, naming the field. (The manifests source refuses the same ones
// itself: TestBadInputManifests.)
func (b *badEnv) testAPIRefuses(t *testing.T) {
	ctx, cancel := apiCtx()
	defer cancel()
	port := func(p int32) *v1.Service { return newService("bad-port", v1.ServiceTypeClusterIP, tcpPort("http", p)) }
	zoneExt := newService("bad-zone-ext", v1.ServiceTypeClusterIP, tcpPort("http", 80))
	zoneExt.Spec.ExternalIPs = []string{"fe80::1%eth0"}
	outside := newService("bad-cip", v1.ServiceTypeClusterIP, tcpPort("http", 80))
	outside.Spec.ClusterIP = "10.200.0.1"
	for _, tc := range []struct {
		svc  *v1.Service
		want string
	}{
		{port(0), "spec.ports[0].port"},
		{port(65536), "spec.ports[0].port"},
		{zoneExt, "spec.externalIPs[0]"},
		{outside, "spec.clusterIPs"},
	} {
		_, err := b.client.CoreV1().Services(ns).Create(ctx, tc.svc, metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("create Service %s (%v): error %v, want one naming %s", tc.svc.Name, tc.svc.Spec, err, tc.want)
		} else {
			t.Logf("API server refused Service %s: %v", tc.svc.Name, err)
		}
	}
	zoneSlice := newSlice("good", "bad-zone-eps", []v1.ServicePort{tcpPort("http", 80)})
	zoneSlice.AddressType = discovery.AddressTypeIPv6
	zoneSlice.Endpoints = []discovery.Endpoint{{Addresses: []string{"fd00::1%eth0"}}}
	loop := newSlice("good", "bad-loopback-eps", []v1.ServicePort{tcpPort("http", 80)})
	loop.Endpoints = []discovery.Endpoint{{Addresses: []string{"127.0.0.1"}}}
	for _, s := range []*discovery.EndpointSlice{zoneSlice, loop} {
		_, err := b.client.DiscoveryV1().EndpointSlices(ns).Create(ctx, s, metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "endpoints[0].addresses[0]") {
			t.Errorf("create EndpointSlice %s: error %v, want one naming endpoints[0].addresses[0]", s.Name, err)
		} else {
			t.Logf("API server refused EndpointSlice %s: %v", s.Name, err)
		}
	}
	// A load balancer's ingress IP with a zone: the status update is refused.
	lb := createService(t, b.client, newService("lb-zone", v1.ServiceTypeLoadBalancer, tcpPort("http", 80)))
	lb.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "fe80::1%eth0"}}
	_, err := b.client.CoreV1().Services(ns).UpdateStatus(ctx, lb, metav1.UpdateOptions{})
	if err == nil || !strings.Contains(err.Error(), "status.loadBalancer.ingress[0].ip") {
		t.Errorf("LoadBalancer ingress IP with a zone: error %v, want one naming status.loadBalancer.ingress[0].ip", err)
	} else {
		t.Logf("API server refused the ingress IP: %v", err)
	}
}

// createObjects creates the Services and slices the API server accepts.
func (b *badEnv) createObjects(t *testing.T) {
	http := []v1.ServicePort{tcpPort("http", 80)}
	b.goodIP = createService(t, b.client, newService("good", v1.ServiceTypeClusterIP, http...)).Spec.ClusterIP
	putSlice(t, b.client, newSlice("good", "good-1", http, "pod-a2", "pod-b2"))

	// The same address twice in one slice and again in a second slice: one endpoint.
	b.dupIP = createService(t, b.client, newService("dup", v1.ServiceTypeClusterIP, http...)).Spec.ClusterIP
	putSlice(t, b.client, newSlice("dup", "dup-1", http, "pod-b1", "pod-b1", "pod-a2"))
	putSlice(t, b.client, newSlice("dup", "dup-2", http, "pod-b1"))

	// 1,000 endpoints, the most one slice may hold.
	b.bigIP = createService(t, b.client, newService("big", v1.ServiceTypeClusterIP, http...)).Spec.ClusterIP
	big := newSlice("big", "big-1", http)
	for i := range 1000 {
		ready, node := true, "node1"
		big.Endpoints = append(big.Endpoints, discovery.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.245.%d.%d", i/250, i%250+1)},
			Conditions: discovery.EndpointConditions{Ready: &ready}, NodeName: &node,
		})
	}
	putSlice(t, b.client, big)

	// 100 ports, 1000..1099, all to the pods' 8080.
	var many []v1.ServicePort
	for i := range int32(100) {
		many = append(many, v1.ServicePort{Name: fmt.Sprintf("p%d", i), Protocol: v1.ProtocolTCP, Port: 1000 + i, TargetPort: intstr.FromInt32(8080)})
	}
	b.portsIP = createService(t, b.client, newService("ports100", v1.ServiceTypeClusterIP, many...)).Spec.ClusterIP
	putSlice(t, b.client, newSlice("ports100", "ports100-1", many, "pod-b1"))

	// Names at their maximum lengths: namespace, Service and port names of 63.
	longSvc := newService(longName, v1.ServiceTypeClusterIP, tcpPort(longPort, 80))
	longSvc.Namespace = longNS
	b.longIP = createService(t, b.client, longSvc).Spec.ClusterIP
	longSlice := newSlice(longName, longName+"-"+strings.Repeat("x", 253-len(longName)-1), []v1.ServicePort{tcpPort(longPort, 80)}, "pod-b1")
	longSlice.Namespace = longNS
	putSlice(t, b.client, longSlice)

	// An external IP that is node1's own address, on a port node1 does not use.
	nodeExt := newService("node-ext", v1.ServiceTypeClusterIP, tcpPort("http", 8080))
	nodeExt.Spec.ExternalIPs = []string{cluster.Node1IP}
	createService(t, b.client, nodeExt)
	putSlice(t, b.client, newSlice("node-ext", "node-ext-1", []v1.ServicePort{tcpPort("http", 8080)}, "pod-b1"))

	// A NodePort that node1's own process already listens on.
	clash := newService("clash", v1.ServiceTypeNodePort, tcpPort("http", 80))
	clash.Spec.Ports[0].NodePort = squatNodePort
	createService(t, b.client, clash)
	putSlice(t, b.client, newSlice("clash", "clash-1", http, "pod-b1"))
}

// runMode starts kproxy in mode and checks every case with real packets.
func (b *badEnv) runMode(t *testing.T, mode string) {
	deleteNodeEvents(t, b.client)
	ext, err := newNSProber(b.c.NS("ext"))
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	// No rules of an earlier mode answer: whatever answers below, this mode programmed.
	if r := ext.TCP(hostPort(b.goodIP, 80), time.Second); r.Error == "" {
		t.Fatalf("the good Service answers (%s) before kproxy started in %s mode", r.Backend, mode)
	}
	p, err := b.c.StartProcess(cluster.KproxyNode, "kproxy-"+mode, kproxyBin,
		"--kubeconfig", b.kubeconfig, "--hostname-override", cluster.KproxyNode,
		"--cluster-cidr", cluster.ClusterCIDR, "--proxy-mode", mode,
		"--iptables-min-sync-period", "100ms",
		"--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", "127.0.0.1:10249", "-v", "2")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		p.Kill()
		if out, err := b.c.RunKproxyCleanup(); err != nil {
			t.Errorf("kproxy --cleanup after %s mode: %v\n%s", mode, err, out)
		}
	}()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		if mode == "nftables" {
			t.Logf("nft list ruleset of node1:\n%s", b.c.NFTListRuleset(cluster.KproxyNode))
		} else {
			t.Logf("iptables-save of node1:\n%s", tail(b.c.IPTablesSave(cluster.KproxyNode), 200))
		}
		t.Logf("kproxy log %s (tail):\n%s", p.LogPath, tail(p.Logs(), 60))
	})
	start := time.Now()
	waitBackends(t, ext, "good", hostPort(b.goodIP, 80), apiFirstSync, "pod-a2", "pod-b2")
	t.Logf("%s: the good Service answers %v after kproxy started", mode, time.Since(start).Round(time.Millisecond))

	// Duplicates count once: exactly the two distinct pods answer, evenly enough that
	// pod-b1 is not listed three times.
	answers, failures, _ := sample(ext, hostPort(b.dupIP, 80), 60)
	if len(failures) > 0 || !sameKeys(answers, []string{"pod-a2", "pod-b1"}) || answers["pod-b1"] > 45 {
		t.Errorf("dup: answers %v, failures %v; want pod-a2 and pod-b1 about half each (pod-b1 once, not three times)", answers, failures)
	}
	if mode == "iptables" {
		dump := b.c.IPTablesSave(cluster.KproxyNode)
		if n := sepChains(dump, ns+"/dup:http"); n != 2 {
			t.Errorf("dup: %d KUBE-SEP chains, want 2", n)
		}
		if n := sepChains(dump, ns+"/big:http"); n != 1000 {
			t.Errorf("big: %d KUBE-SEP chains, want 1000", n)
		}
	}
	// 1,000 endpoints: every connection is answered (by pod-a1, on whichever address).
	answers, failures, _ = sample(ext, hostPort(b.bigIP, 80), 40)
	if len(failures) > 0 || answers["pod-a1"] != 40 {
		t.Errorf("big (1,000 endpoints): answers %v, failures %v; want 40 from pod-a1", answers, failures)
	}
	// 100 ports: the first, a middle and the last.
	for _, port := range []int{1000, 1049, 1099} {
		answers, failures, _ = sample(ext, hostPort(b.portsIP, port), 5)
		if len(failures) > 0 || answers["pod-b1"] != 5 {
			t.Errorf("ports100 port %d: answers %v, failures %v; want 5 from pod-b1", port, answers, failures)
		}
	}
	// Names of the maximum length.
	answers, failures, _ = sample(ext, hostPort(b.longIP, 80), 5)
	if len(failures) > 0 || answers["pod-b1"] != 5 {
		t.Errorf("%s/%s: answers %v, failures %v; want 5 from pod-b1", longNS, longName, answers, failures)
	}
	// The node's own address as an external IP: the Service answers on its port, and
	// the node's other ports still reach the node's own processes.
	answers, failures, _ = sample(ext, hostPort(cluster.Node1IP, 8080), 5)
	if len(failures) > 0 || answers["pod-b1"] != 5 {
		t.Errorf("externalIP = node1's IP, port 8080: answers %v, failures %v; want 5 from pod-b1", answers, failures)
	}
	answers, failures, _ = sample(ext, hostPort(cluster.Node1IP, nodeOwnPort), 5)
	if len(failures) > 0 || answers["node1-own"] != 5 {
		t.Errorf("node1's own port %d: answers %v, failures %v; want 5 from node1's own listener", nodeOwnPort, answers, failures)
	}
	// The NodePort held by node1's process: the Service works (its rules come first),
	// and the Node gets a Warning naming the port and the Service.
	answers, failures, _ = sample(ext, hostPort(cluster.Node1IP, squatNodePort), 10)
	if len(failures) > 0 || answers["pod-b1"] != 10 {
		t.Errorf("clash NodePort %d: answers %v, failures %v; want 10 from pod-b1", squatNodePort, answers, failures)
	}
	port := fmt.Sprintf("TCP/%d", squatNodePort)
	ev := waitEvent(t, b.client, "default", "Node", cluster.KproxyNode, "FailedToReserveNodePort", 30*time.Second)
	if ev != nil {
		if !strings.Contains(ev.Note, port) || !strings.Contains(ev.Note, ns+"/clash:http") || ev.Type != v1.EventTypeWarning ||
			ev.Related == nil || ev.Related.Name != "clash" || ev.ReportingController != "kproxy" || ev.Action != "ReserveNodePort" {
			t.Errorf("Node Event %+v: want a Warning naming %s and %s/clash:http, related to Service clash, from kproxy", ev, port, ns)
		}
		t.Logf("Event on Node %s: %s %s: %s", cluster.KproxyNode, ev.Type, ev.Reason, ev.Note)
	}
	logs := p.Logs()
	if !strings.Contains(logs, "Cannot reserve NodePort") || !strings.Contains(logs, port) {
		t.Errorf("kproxy's log does not name the NodePort %s it cannot reserve", port)
	}
	for _, bad := range []string{"forbidden", "Sync failed", "Server rejected event"} {
		if strings.Contains(logs, bad) {
			t.Errorf("kproxy's log says %q:\n%s", bad, linesWith(logs, bad))
		}
	}
}

// deleteNodeEvents removes the Events of earlier runs, so each mode's kproxy must
// write its own.
func deleteNodeEvents(t *testing.T, client kubernetes.Interface) {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	if err := client.EventsV1().Events("default").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatalf("delete Events: %v", err)
	}
}

// waitEvent waits for an events.k8s.io/v1 Event with the reason, regarding the
// object, and returns it (nil after failing t).
func waitEvent(t *testing.T, client kubernetes.Interface, namespace, kind, name, reason string, timeout time.Duration) *eventsv1.Event {
	t.Helper()
	var found *eventsv1.Event
	err := cluster.WaitFor(func() error {
		var err error
		found, err = findEvent(client, namespace, kind, name, reason)
		return err
	}, timeout)
	if err != nil {
		t.Error(err)
		return nil
	}
	return found
}

// findEvent returns the Event with the reason regarding the object, or an error
// listing the Events there are.
func findEvent(client kubernetes.Interface, namespace, kind, name, reason string) (*eventsv1.Event, error) {
	ctx, cancel := apiCtx()
	defer cancel()
	list, err := client.EventsV1().Events(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var seen []string
	for i := range list.Items {
		e := &list.Items[i]
		if e.Regarding.Kind == kind && e.Regarding.Name == name && e.Reason == reason {
			return e, nil
		}
		seen = append(seen, e.Regarding.Kind+"/"+e.Regarding.Name+" "+e.Reason)
	}
	return nil, fmt.Errorf("no Event %s on %s %s/%s; Events: %v", reason, kind, namespace, name, seen)
}

// linesWith returns the lines of s that contain sub.
func linesWith(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
