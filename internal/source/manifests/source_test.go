package manifests

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kproxy/kproxy/internal/allocator"
)

const multiDoc = `# web and its endpoints
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
  - port: 80
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
endpoints:
- addresses: ["10.1.0.5"]
ports:
- port: 8080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: ignored
data: {a: b}
---
apiVersion: v1
kind: Service
metadata:
  name: dns
  namespace: kube-system
spec:
  type: NodePort
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53}
  - {name: metrics, port: 9153, targetPort: metrics}
`

const listAndNodes = `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: lb, namespace: prod}
  spec:
    type: LoadBalancer
    externalTrafficPolicy: Local
    ipFamilyPolicy: PreferDualStack
    ports: [{port: 443}]
- apiVersion: v1
  kind: Node
  metadata: {name: node-1}
  status:
    addresses: [{type: InternalIP, address: 192.168.1.10}]
- apiVersion: v1
  kind: Node
  metadata: {name: node-2}
`

const jsonService = `{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "json-svc"},
 "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ipFamilies": ["IPv6"],
          "ports": [{"port": 8443, "protocol": "SCTP"}]}}`

func TestInitialLoad(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", multiDoc)
	writeFile(t, dir, "b.yml", listAndNodes)
	writeFile(t, dir, "c.json", jsonService)
	writeFile(t, dir, "d.yaml", service("headless", "  clusterIP: None\n  ports: [{port: 80}]\n")+
		"\n---\n"+service("ext", "  type: ExternalName\n  externalName: example.com\n"))
	// Not manifests: hidden, backup, other extension.
	writeFile(t, dir, ".hidden.yaml", service("hidden", "  ports: [{port: 1}]\n"))
	writeFile(t, dir, "e.yaml~", service("backup", "  ports: [{port: 1}]\n"))
	writeFile(t, dir, "notes.txt", service("txt", "  ports: [{port: 1}]\n"))
	r := start(t, defaultOptions(dir, t.TempDir()))

	if errs := r.src.Errors(); len(errs) != 0 {
		t.Fatalf("unexpected errors: %v", errs)
	}
	got := r.rec.callLog()
	if got[len(got)-1] != "synced" {
		t.Errorf("OnSynced was not the last call of the initial load: %v", got)
	}
	slices.Sort(got)
	want := []string{"synced", "upsert endpointslice default/web-1", "upsert node node-1",
		"upsert service default/ext", "upsert service default/json-svc", "upsert service default/web",
		"upsert service kube-system/dns", "upsert service prod/lb"}
	if !slices.Equal(got, want) {
		t.Errorf("calls:\n got %v\nwant %v", got, want)
	}

	v4 := netip.MustParsePrefix("10.96.0.0/12")
	v6 := netip.MustParsePrefix("fd00:10:96::/112")
	web := r.rec.service("default/web")
	if ip, err := netip.ParseAddr(web.Spec.ClusterIP); err != nil || !v4.Contains(ip) || slices.Equal(web.Spec.ClusterIPs, []string{web.Spec.ClusterIP}) == false {
		t.Errorf("web clusterIP %q clusterIPs %v: want one address from %v", web.Spec.ClusterIP, web.Spec.ClusterIPs, v4)
	}
	if web.Spec.Type != v1.ServiceTypeClusterIP || web.Spec.SessionAffinity != v1.ServiceAffinityNone ||
		*web.Spec.IPFamilyPolicy != v1.IPFamilyPolicySingleStack || !slices.Equal(web.Spec.IPFamilies, []v1.IPFamily{v1.IPv4Protocol}) ||
		*web.Spec.InternalTrafficPolicy != v1.ServiceInternalTrafficPolicyCluster || web.Spec.ExternalTrafficPolicy != "" {
		t.Errorf("web not defaulted like the API server: %+v", web.Spec)
	}
	if p := web.Spec.Ports[0]; p.Protocol != v1.ProtocolTCP || p.TargetPort != intstr.FromInt32(80) || p.NodePort != 0 {
		t.Errorf("web port not defaulted: %+v", p)
	}
	if web.Namespace != "default" {
		t.Errorf("namespace %q, want default", web.Namespace)
	}

	dns := r.rec.service("kube-system/dns")
	udp, tcp, metrics := dns.Spec.Ports[0].NodePort, dns.Spec.Ports[1].NodePort, dns.Spec.Ports[2].NodePort
	if udp == 0 || udp != tcp || metrics == udp || !allocator.DefaultNodePortRange.Contains(int(metrics)) || !allocator.DefaultNodePortRange.Contains(int(udp)) {
		t.Errorf("dns nodePorts udp=%d tcp=%d metrics=%d: want UDP and TCP 53 to share one, metrics its own", udp, tcp, metrics)
	}
	if dns.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyCluster || dns.Spec.Ports[2].TargetPort != intstr.FromString("metrics") {
		t.Errorf("dns not defaulted: %+v", dns.Spec)
	}

	lb := r.rec.service("prod/lb")
	if len(lb.Spec.ClusterIPs) != 2 || !v4.Contains(netip.MustParseAddr(lb.Spec.ClusterIPs[0])) || !v6.Contains(netip.MustParseAddr(lb.Spec.ClusterIPs[1])) {
		t.Errorf("PreferDualStack lb got clusterIPs %v, want one per family", lb.Spec.ClusterIPs)
	}
	if lb.Spec.HealthCheckNodePort == 0 || lb.Spec.Ports[0].NodePort == 0 || lb.Spec.HealthCheckNodePort == lb.Spec.Ports[0].NodePort {
		t.Errorf("lb with eTP Local: healthCheckNodePort %d, nodePort %d", lb.Spec.HealthCheckNodePort, lb.Spec.Ports[0].NodePort)
	}

	js := r.rec.service("default/json-svc")
	if js.Spec.Ports[0].NodePort != 0 || len(js.Spec.ClusterIPs) != 1 || !v6.Contains(netip.MustParseAddr(js.Spec.ClusterIP)) {
		t.Errorf("json-svc (IPv6, no LB nodePorts): %+v", js.Spec)
	}
	if ext := r.rec.service("default/ext"); ext.Spec.ClusterIP != "" || len(ext.Spec.IPFamilies) != 0 {
		t.Errorf("ExternalName got an address: %+v", ext.Spec)
	}
	if _, held := r.src.alloc.Holding("default/headless"); len(held) != 0 {
		t.Errorf("headless service holds ports %v", held)
	}
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	if r.rec.node == nil || r.rec.node.Name != "node-1" {
		t.Errorf("node: %+v", r.rec.node)
	}
	if es := r.rec.slices["default/web-1"]; es == nil || *es.Ports[0].Protocol != v1.ProtocolTCP || *es.Ports[0].Name != "" {
		t.Errorf("endpointslice not defaulted: %+v", es)
	}
}

func TestPersistenceAcrossRestart(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	writeFile(t, dir, "a.yaml", multiDoc)
	writeFile(t, dir, "b.yaml", listAndNodes)
	r := start(t, defaultOptions(dir, state))
	first := map[string]v1.ServiceSpec{}
	for _, nn := range []string{"default/web", "kube-system/dns", "prod/lb"} {
		first[nn] = r.rec.service(nn).Spec
	}
	// Locked while running.
	if _, err := New(defaultOptions(dir, state), newRecorder()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Source on a state dir in use: %v", err)
	}
	r.stop()

	r2 := start(t, defaultOptions(dir, state))
	for nn, spec := range first {
		got := r2.rec.service(nn).Spec
		if !slices.Equal(got.ClusterIPs, spec.ClusterIPs) || got.HealthCheckNodePort != spec.HealthCheckNodePort {
			t.Errorf("%s after restart: clusterIPs %v hcnp %d, want %v %d", nn, got.ClusterIPs, got.HealthCheckNodePort, spec.ClusterIPs, spec.HealthCheckNodePort)
		}
		for i := range spec.Ports {
			if got.Ports[i].NodePort != spec.Ports[i].NodePort {
				t.Errorf("%s port %d after restart: nodePort %d, want %d", nn, i, got.Ports[i].NodePort, spec.Ports[i].NodePort)
			}
		}
	}
	// A Service that is gone at restart gives its address back.
	r2.stop()
	if err := os.Remove(filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	r3 := start(t, defaultOptions(dir, state))
	if owners := r3.src.alloc.Owners(); !slices.Equal(owners, []string{"default/web", "kube-system/dns"}) {
		t.Errorf("owners after prod/lb's file went: %v", owners)
	}
	if got := r3.rec.service("default/web").Spec.ClusterIP; got != first["default/web"].ClusterIP {
		t.Errorf("web's address changed across restarts: %s -> %s", first["default/web"].ClusterIP, got)
	}
}

func TestWatchLatency(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", service("a", "  ports: [{port: 80}]\n"))
	r := start(t, defaultOptions(dir, t.TempDir()))

	// A new file written in place.
	begin := time.Now()
	if err := os.WriteFile(filepath.Join(dir, "b.yaml"), []byte(service("b", "  ports: [{port: 81}]\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to appear", func() bool { return r.rec.service("default/b") != nil })
	if d := time.Since(begin); d > time.Second {
		t.Errorf("a new file took %v to show", d)
	}
	// An edit through rename, as editors save.
	begin = time.Now()
	writeFile(t, dir, "a.yaml", service("a", "  ports: [{port: 8080}]\n"))
	waitFor(t, "a's new port", func() bool { s := r.rec.service("default/a"); return s.Spec.Ports[0].Port == 8080 })
	if d := time.Since(begin); d > time.Second {
		t.Errorf("an edit took %v to show", d)
	}
	// A removal.
	begin = time.Now()
	if err := os.Remove(filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to go", func() bool { return r.rec.service("default/b") == nil })
	if d := time.Since(begin); d > time.Second {
		t.Errorf("a removal took %v to show", d)
	}
}
