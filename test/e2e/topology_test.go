package e2e

import (
	"net"
	"testing"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// TestTopology checks the namespace cluster itself, without kproxy: pods reach pods
// on the other node unmasqueraded, ext reaches pods, and nothing reaches a Service
// address while no proxy runs (the dead end answers "unreachable").
func TestTopology(t *testing.T) {
	requireEnv(t)
	c := newCluster(t)

	cases := []struct {
		from, proto, to string
		wantSeen        string
	}{
		{"pod-a1", "tcp", "pod-b1", "10.244.1.11"},
		{"pod-b2", "tcp", "pod-a2", "10.244.2.12"},
		{"pod-a1", "tcp", "pod-a2", "10.244.1.11"},
		{"pod-a2", "udp", "pod-b2", "10.244.1.12"},
		{"ext", "tcp", "pod-a1", cluster.ExtIP},
		{"ext", "tcp", "pod-b1", cluster.ExtIP},
		{"node1", "tcp", "pod-b2", cluster.Node1IP},
		{"node2", "udp", "pod-a1", cluster.Node2IP},
	}
	for _, tc := range cases {
		port := "80"
		if tc.proto == "udp" {
			port = "53"
		}
		target := net.JoinHostPort(cluster.PodByName(tc.to).IP, port)
		replies := c.Request(tc.from, tc.proto, target, 3)
		for _, r := range replies {
			if r.Error != "" || r.Backend != tc.to || r.SeenIP() != tc.wantSeen {
				t.Errorf("%s -> %s %s: got %+v, want an answer from %s seeing %s", tc.from, tc.proto, target, r, tc.to, tc.wantSeen)
			}
		}
	}
	// Port 8080 on every pod too.
	for _, p := range cluster.Pods {
		r := c.Request("ext", "tcp", p.IP+":8080", 1)[0]
		if r.Backend != p.Name {
			t.Errorf("ext -> %s:8080: got %+v", p.IP, r)
		}
	}
	// With no proxy, a ClusterIP goes to the dead end and fails fast.
	r := c.Request("pod-a1", "tcp", "10.96.0.10:80", 1)[0]
	if r.Error != "unreachable" || r.Ms > 1000 {
		t.Errorf("pod-a1 -> 10.96.0.10:80 without proxy: got %+v, want a fast \"unreachable\"", r)
	}
	// A closed port on a pod is refused, which is how REJECT looks to the client.
	r = c.Request("pod-a1", "tcp", "10.244.2.11:9", 1)[0]
	if r.Error != "refused" {
		t.Errorf("pod-a1 -> pod-b1:9 (closed): got %+v, want refused", r)
	}
	r = c.Request("pod-a1", "udp", "10.244.2.11:9", 1)[0]
	if r.Error != "refused" {
		t.Errorf("pod-a1 -> pod-b1:9/udp (closed): got %+v, want refused", r)
	}
}
