package healthcheck

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/model"
)

func freePort(t *testing.T) int32 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return int32(ln.Addr().(*net.TCPAddr).Port)
}

func TestServiceHealthFollowsLocalEndpoints(t *testing.T) {
	port := freePort(t)
	nn := types.NamespacedName{Namespace: "ns", Name: "lb"}
	sp := &model.ServicePort{Name: model.ServicePortName{NamespacedName: nn, Protocol: v1.ProtocolTCP}, HealthCheckNodePort: port}
	snap := &model.Snapshot{
		PortsByService: map[types.NamespacedName][]*model.ServicePort{nn: {sp}},
		Endpoints: map[model.ServicePortName][]*model.Endpoint{sp.Name: {
			{IP: netip.MustParseAddr("10.0.0.1"), Port: 80, IsLocal: false, Ready: true},
		}},
	}
	snap.Nodes = nodePortsOn("127.0.0.1")
	h := NewServiceHealth(nil)
	defer h.Stop()
	h.Sync(snap)
	get := func() (int, serviceBody, string) {
		t.Helper()
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var b serviceBody
		if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b, resp.Header.Get("X-Load-Balancing-Endpoint-Weight")
	}
	if code, b, _ := get(); code != 503 || b.LocalEndpoints != 0 || b.Service.Name != "lb" {
		t.Errorf("no local endpoint: got %d %+v, want 503", code, b)
	}
	snap.Endpoints[sp.Name] = append(snap.Endpoints[sp.Name],
		&model.Endpoint{IP: netip.MustParseAddr("10.0.0.2"), Port: 80, IsLocal: true, Ready: true},
		&model.Endpoint{IP: netip.MustParseAddr("10.0.0.3"), Port: 80, IsLocal: true, Ready: false, Serving: true, Terminating: true})
	h.Sync(snap)
	if code, b, w := get(); code != 200 || b.LocalEndpoints != 1 || !b.ServiceProxyHealthy || w != "1" {
		t.Errorf("one ready local endpoint: got %d %+v weight %s, want 200 with 1", code, b, w)
	}
	// The Service goes away: the port closes.
	h.Sync(&model.Snapshot{})
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port)); err == nil {
		_ = resp.Body.Close()
		t.Errorf("health check port still open after the Service was removed")
	}
}

// nodePortsOn is the node parameters of a node whose NodePorts answer on ip only.
func nodePortsOn(ip string) map[model.Family]model.NodeParams {
	return map[model.Family]model.NodeParams{
		model.IPv4: {Family: model.IPv4, NodePortIPs: []netip.Addr{netip.MustParseAddr(ip)}},
		model.IPv6: {Family: model.IPv6},
	}
}

// TestServiceHealthFollowsNodeAddresses: the servers listen on the snapshot's NodePort
// addresses, and move when they change.
func TestServiceHealthFollowsNodeAddresses(t *testing.T) {
	port := freePort(t)
	nn := types.NamespacedName{Namespace: "ns", Name: "lb"}
	sp := &model.ServicePort{Name: model.ServicePortName{NamespacedName: nn, Protocol: v1.ProtocolTCP}, HealthCheckNodePort: port}
	snap := func(nodeIP string) *model.Snapshot {
		return &model.Snapshot{
			Node:           &model.Node{Name: "n", Addresses: []netip.Addr{netip.MustParseAddr(nodeIP)}},
			Nodes:          nodePortsOn(nodeIP),
			PortsByService: map[types.NamespacedName][]*model.ServicePort{nn: {sp}},
			Endpoints: map[model.ServicePortName][]*model.Endpoint{sp.Name: {
				{IP: netip.MustParseAddr("10.0.0.1"), Port: 80, IsLocal: true, Ready: true},
			}},
		}
	}
	h := NewServiceHealth(nil)
	defer h.Stop()
	answers := func(ip string) bool {
		resp, err := http.Get(fmt.Sprintf("http://%s:%d/", ip, port))
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == 200
	}
	for _, step := range []struct{ node, other string }{
		{"127.0.0.2", "127.0.0.1"},
		{"127.0.0.1", "127.0.0.2"},
	} {
		h.Sync(snap(step.node))
		if !answers(step.node) {
			t.Errorf("Node address %s: the health check node port does not answer there", step.node)
		}
		if answers(step.other) {
			t.Errorf("Node address %s: the health check node port still answers on %s", step.node, step.other)
		}
	}
}
