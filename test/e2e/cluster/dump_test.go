package cluster

import (
	"os"
	"strings"
	"testing"
)

// The testdata dump is upstream's documented example ruleset (plus a no-endpoints
// Service) loaded into a namespace and read back with iptables-save -c, so it has
// the normalised option order and quoting that real dumps have.
func readDump(t *testing.T) string {
	b, err := os.ReadFile("testdata/upstream-example.iptables-save")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestClusterIPInDump(t *testing.T) {
	dump := readDump(t)
	for svc, want := range map[string]string{
		"ns1/svc1:p80":   "172.30.0.41",
		"ns2/svc2:p80":   "172.30.0.42",
		"ns3/empty:http": "172.30.0.43",
	} {
		if got, ok := ClusterIPInDump(dump, svc); !ok || got != want {
			t.Errorf("ClusterIPInDump(%s) = %q, %v; want %s", svc, got, ok, want)
		}
	}
	// A prefix of a real name must not match (ns1/svc is not ns1/svc1).
	if got, ok := ClusterIPInDump(dump, "ns1/svc"); ok {
		t.Errorf("ClusterIPInDump(ns1/svc) = %q, want no match", got)
	}
}

func TestNodePortInDump(t *testing.T) {
	dump := readDump(t)
	for svc, want := range map[string]int{"ns2/svc2:p80": 3001, "ns3/empty:http": 3003} {
		if got, ok := NodePortInDump(dump, svc); !ok || got != want {
			t.Errorf("NodePortInDump(%s) = %d, %v; want %d", svc, got, ok, want)
		}
	}
	if got, ok := NodePortInDump(dump, "ns1/svc1:p80"); ok {
		t.Errorf("ns1/svc1 has no NodePort, got %d", got)
	}
}

func TestKubeChains(t *testing.T) {
	chains := KubeChains(readDump(t))
	has := map[string]bool{}
	for _, c := range chains {
		has[c] = true
	}
	for _, want := range []string{"filter KUBE-FORWARD", "nat KUBE-SERVICES", "nat KUBE-SEP-SXIVWICOYRO3J4NJ"} {
		if !has[want] {
			t.Errorf("KubeChains misses %q; got %v", want, chains)
		}
	}
	if got := KubeChains("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"); len(got) != 0 {
		t.Errorf("clean dump: got %v", got)
	}
}

func TestManifestBuilders(t *testing.T) {
	svc := Service{Namespace: "e2e", Name: "web", Type: "LoadBalancer", Ports: []ServicePort{{Name: "http", Port: 80, TargetPort: 8080}},
		LoadBalancerIngress: []string{"192.168.60.10"}, ClientIPAffinity: true}
	y := svc.YAML()
	for _, want := range []string{"kind: Service", "type: LoadBalancer", "targetPort: 8080", "ip: 192.168.60.10", "sessionAffinity: ClientIP", "timeoutSeconds: 10800"} {
		if !contains(y, want) {
			t.Errorf("Service YAML lacks %q:\n%s", want, y)
		}
	}
	if contains(y, "clusterIP") {
		t.Errorf("Service without ClusterIP must not set one:\n%s", y)
	}
	es := EndpointSlice{Namespace: "e2e", Service: "web", Ports: []SlicePort{{Name: "http", Port: 8080}}, Endpoints: PodEndpoints("pod-a1", "pod-b2")}
	y = es.YAML()
	for _, want := range []string{"kubernetes.io/service-name: web", "name: web-1", "- 10.244.1.11", "nodeName: node2", "ready: true", "port: 8080"} {
		if !contains(y, want) {
			t.Errorf("EndpointSlice YAML lacks %q:\n%s", want, y)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
