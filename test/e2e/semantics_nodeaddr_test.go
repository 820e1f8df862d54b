package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// node1LoopbackIP is a global address on node1's loopback interface, added before
// kproxy starts: the first global address in the node's interface list, and not the
// Node object's address. A node with several interfaces (a BGP loopback, a management
// network) looks like this.
const node1LoopbackIP = "192.168.81.1"

// testNodeAddressChange: health check node ports listen where NodePorts answer, on the
// Node object's primary address when nodePortAddresses is primary (nftables' default),
// not on the first address of the first interface; when the Node's address changes,
// the NodePort and the health check node port move with it, without a restart.
// With nodePortAddresses unset in iptables mode both answer on every address.
func testNodeAddressChange(t *testing.T, e *env) {
	s := svc("hcmove", "LoadBalancer", "10.96.1.81", svcPorts(31081, 31083), withETPLocal(31082))
	e.putV4(t, s, readyEps("pod-a1", "pod-b1"))
	primaryOnly := e.mode == "nftables"

	// at checks, from ext, which of the node's addresses answer the NodePort and the
	// health check node port.
	at := func(t *testing.T, answering []string, silent []string) {
		t.Helper()
		for _, ip := range answering {
			e.expect(t, "ext", "tcp", hostPort(ip, 31081), []string{"pod-a1"}, sawUnmasqueraded(cluster.ExtIP))
			if err := e.c.WaitFor(func() error { return e.healthCode(ip, 31082, 200) }, settle); err != nil {
				t.Errorf("health check node port on %s: %v", ip, err)
			}
		}
		for _, ip := range silent {
			e.expectFail(t, "ext", "tcp", hostPort(ip, 31081), "")
			if err := e.c.WaitFor(func() error { return e.healthCode(ip, 31082, 0) }, settle); err != nil {
				t.Errorf("health check node port on %s: %v", ip, err)
			}
		}
	}
	t.Run("PrimaryFromNode", func(t *testing.T) {
		if primaryOnly {
			at(t, []string{cluster.Node1IP}, []string{node1LoopbackIP, node1AltIP})
		} else {
			at(t, []string{cluster.Node1IP, node1LoopbackIP, node1AltIP}, nil)
		}
	})

	// The Node's address changes to node1's second LAN address.
	writeNodes(t, e.c, node1AltIP)
	defer func() {
		writeNodes(t, e.c, cluster.Node1IP)
		if err := e.c.WaitFor(func() error { return e.healthCode(cluster.Node1IP, 31082, 200) }, settle); err != nil {
			t.Errorf("after the Node's address was restored: %v", err)
		}
	}()
	t.Run("FollowsNodeChange", func(t *testing.T) {
		if primaryOnly {
			at(t, []string{node1AltIP}, []string{cluster.Node1IP, node1LoopbackIP})
		} else {
			at(t, []string{cluster.Node1IP, node1AltIP}, nil)
		}
	})
}

// writeNodes writes the semantics cluster's Nodes with node1's IPv4 address ip.
func writeNodes(t *testing.T, c *cluster.Cluster, node1IP string) {
	t.Helper()
	nodes := cluster.Documents(
		semNode("node1", node1IP, cluster.Node1IP6, "10.244.1.0/24", cluster.PodCIDR6("node1")),
		semNode("node2", cluster.Node2IP, cluster.Node2IP6, "10.244.2.0/24", cluster.PodCIDR6("node2")),
		semNode("node3", "192.168.50.3", "fd00:50::3", "10.244.3.0/24", "fd00:10:244:3::/64"),
	)
	if err := c.WriteManifest("nodes", nodes); err != nil {
		t.Fatal(err)
	}
}

// healthCode asks the health check node port on ip from ext and returns nil when it
// answers with HTTP status want; want 0 means it must not answer at all.
func (e *env) healthCode(ip string, port, want int) error {
	url := "http://" + hostPort(ip, port) + "/"
	out, err := e.c.Exec("ext", "curl", "-s", "-m", "1", "-o", "/dev/null", "-w", "%{http_code}", url)
	if want == 0 {
		if err == nil {
			return fmt.Errorf("GET %s answered %s, want no answer", url, strings.TrimSpace(out))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("GET %s: %w (%s)", url, err, strings.TrimSpace(out))
	}
	if code, _ := strconv.Atoi(strings.TrimSpace(out)); code != want {
		return fmt.Errorf("GET %s: status %s, want %d", url, strings.TrimSpace(out), want)
	}
	return nil
}
