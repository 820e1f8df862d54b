package e2e

import (
	"testing"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// The Services the flag groups share: a NodePort Service with node2's endpoints and
// a LoadBalancer Service with eTP Local and every endpoint (its externalIP shows
// the local-traffic detector: detected pods are short-circuited to all endpoints,
// unmasqueraded; anything else is external and gets node1's endpoints only).
const (
	npIP   = "10.96.1.60"
	detAIP = "10.96.1.71"
	detIP  = "10.96.1.70"
	detEx  = "192.168.70.70:80"
)

// det-a (detAIP) has node1's endpoints only: a client on node2 whose traffic node1
// does not masquerade only gets its answers back through node1 from those (node2 runs
// no proxy to undo a DNAT to its own pods).
//
// detPods are det's endpoints: not pod-b1, which the detector cases use as a client
// from node2 (it reaching itself through node1 is a hairpin that only iptables mode
// masquerades, since nftables mode's hairpin set holds local endpoints only).
var detPods = []string{"pod-a1", "pod-a2", "pod-b2"}

func (e *env) putFlagServices(t *testing.T) {
	e.putV4(t, svc("np", "NodePort", npIP, svcPorts(31060, 31061)), readyEps(node2Pods...))
	e.putV4(t, svc("det", "LoadBalancer", detIP, svcPorts(31070, 31071), withETPLocal(31072), withExternalIPs("192.168.70.70")), readyEps(detPods...))
	e.putV4(t, svc("det-a", "ClusterIP", detAIP, svcPorts(0, 0)), readyEps(node1Pods...))
}

// testLocalhostNodePorts: group I3/I4. A NodePort on node1's own address answers node1
// itself; on 127.0.0.1 only in iptables mode (route_localnet), masqueraded. Upstream's
// nftables mode does not serve localhost NodePorts (reference §1.2), nor does kproxy's.
func testLocalhostNodePorts(t *testing.T, e *env) {
	e.putFlagServices(t)
	e.expect(t, "node1", "tcp", hostPort(cluster.Node1IP, 31060), node2Pods, sawUnmasqueraded(cluster.Node1IP))
	if e.mode == "iptables" {
		// Upstream counts what localhost NodePorts accept in an nfacct object, and
		// exports it (its e2e suite's KubeProxy test reads the metric).
		const accepted = "kubeproxy_iptables_localhost_nodeports_accepted_packets_total"
		before, ok := scrapeMetrics(t, e.c).get(accepted)
		if !ok {
			t.Errorf("metric %s is missing", accepted)
		}
		e.expect(t, "node1", "tcp", "127.0.0.1:31060", node2Pods, sawUnmasqueraded(cluster.Node1IP))
		e.expect(t, "node1", "udp", "127.0.0.1:31061", node2Pods, sawUnmasqueraded(cluster.Node1IP))
		if after, _ := scrapeMetrics(t, e.c).get(accepted); after <= before {
			t.Errorf("%s: %v before and %v after connections to localhost NodePorts, want it to grow", accepted, before, after)
		}
		if out, _ := e.c.Exec("node1", "sysctl", "-n", "net.ipv4.conf.all.route_localnet"); out != "1\n" {
			t.Errorf("route_localnet in node1 is %q, want 1", out)
		}
	} else {
		t.Logf("%s mode: localhost NodePorts are not served, as in upstream's nftables mode; 127.0.0.1:31060 must not answer", e.mode)
		e.expectFail(t, "node1", "tcp", "127.0.0.1:31060", "")
	}
	// IPv6 never has localhost NodePorts.
	e.expectFail(t, "node1", "tcp", "[::1]:31060", "")
	// Default nodePortAddresses: iptables "all" (the secondary address answers too),
	// nftables "primary" (only the Node's InternalIP).
	secondary := hostPort(node1AltIP, 31060)
	if e.mode == "iptables" {
		e.expect(t, "ext", "tcp", secondary, node2Pods, sawMasqueradedBy1)
	} else {
		t.Logf("%s mode: default nodePortAddresses is primary; %s must not answer", e.mode, secondary)
		e.expectFail(t, "ext", "tcp", secondary, "")
	}
	e.expect(t, "ext", "tcp", hostPort(cluster.Node1IP, 31060), node2Pods, sawMasqueradedBy1)
}

// testDetectClusterCIDR: the default detector, --cluster-cidr 10.244.0.0/16 (group K).
func testDetectClusterCIDR(t *testing.T, e *env) {
	e.putFlagServices(t)
	cip := hostPort(detIP, 80)
	e.expect(t, "pod-a1", "tcp", cip, detPods, sawFromPod("pod-a1"))
	e.expect(t, "pod-b1", "tcp", detAIP+":80", node1Pods, sawUnmasqueraded("10.244.2.11"))
	e.expect(t, bridgePod, "tcp", cip, detPods, sawUnmasqueraded(bridgePodIP))
	e.expect(t, "ext", "tcp", cip, detPods, sawMasqueradedBy1)
	// eTP Local externalIP: pods short-circuit to all endpoints, ext gets the local ones.
	e.expect(t, "pod-a1", "tcp", detEx, detPods, sawFromPod("pod-a1"))
	e.expect(t, "ext", "tcp", detEx, node1Pods, sawUnmasqueraded(cluster.ExtIP))
}

// testDetectNodeCIDR: --detect-local-mode NodeCIDR: only node1's podCIDR 10.244.1.0/24
// is local, so pod-b1 (10.244.2.11, routed in by node2) counts as external.
func testDetectNodeCIDR(t *testing.T, e *env) {
	cip := hostPort(detIP, 80)
	e.expect(t, "pod-a1", "tcp", cip, detPods, sawFromPod("pod-a1"))
	e.expect(t, "pod-b1", "tcp", cip, detPods, sawMasqueradedBy1)
	e.expect(t, "pod-b1", "tcp", detAIP+":80", node1Pods, sawMasqueradedBy1)
	e.expect(t, "pod-a1", "tcp", detEx, detPods, sawFromPod("pod-a1"))
	e.expect(t, "pod-b1", "tcp", detEx, node1Pods, sawUnmasqueraded("10.244.2.11"))
}

// testDetectBridge: --detect-local-mode BridgeInterface --pod-bridge-interface cbr0:
// only pod-c1, plugged into cbr0, is local; the point-to-point pods are not.
func testDetectBridge(t *testing.T, e *env) {
	cip := hostPort(detIP, 80)
	e.expect(t, bridgePod, "tcp", cip, detPods, sawUnmasqueraded(bridgePodIP))
	e.expect(t, "pod-a1", "tcp", cip, detPods, sawMasqueradedBy1)
	e.expect(t, bridgePod, "tcp", detEx, detPods, sawUnmasqueraded(bridgePodIP))
	e.expect(t, "pod-a2", "tcp", detEx, node1Pods, sawFromPod("pod-a2"))
}

// testDetectInterfacePrefix: --detect-local-mode InterfaceNamePrefix with "v-", the
// prefix of node1's pod veths: pod-a1 is local, the bridged pod-c1 (cbr0) is not.
func testDetectInterfacePrefix(t *testing.T, e *env) {
	cip := hostPort(detIP, 80)
	e.expect(t, "pod-a1", "tcp", cip, detPods, sawFromPod("pod-a1"))
	e.expect(t, bridgePod, "tcp", cip, detPods, sawMasqueradedBy1)
	e.expect(t, "pod-a1", "tcp", detEx, detPods, sawFromPod("pod-a1"))
	e.expect(t, bridgePod, "tcp", detEx, node1Pods, sawUnmasqueraded(bridgePodIP))
}

// testMasqueradeAll: --masquerade-all: pod traffic to a ClusterIP is masqueraded too,
// in both families.
func testMasqueradeAll(t *testing.T, e *env) {
	e.expect(t, "pod-a1", "tcp", hostPort(detIP, 80), detPods, sawMasqueradedBy1)
	e.expect(t, "pod-a1", "udp", hostPort(detIP, 53), detPods, sawMasqueradedBy1)
	e.expect(t, "pod-a2", "tcp", "[fd00:10:96::30]:80", allPods, sawMasqueradedBy1v6)
}

// testNodePortAddressesCIDR: --nodeport-addresses 192.168.50.1/32,fd00:50::1/128:
// NodePorts answer on those addresses only.
func testNodePortAddressesCIDR(t *testing.T, e *env) {
	e.expect(t, "ext", "tcp", hostPort(cluster.Node1IP, 31060), node2Pods, sawMasqueradedBy1)
	e.expect(t, "ext", "tcp", "["+cluster.Node1IP6+"]:31030", allPods, sawMasqueradedBy1v6)
	e.expectFail(t, "ext", "tcp", hostPort(node1AltIP, 31060), "")
	if e.mode == "iptables" {
		// 127.0.0.1 is not selected: no localhost NodePorts either.
		e.expectFail(t, "node1", "tcp", "127.0.0.1:31060", "")
	}
}

// testNodePortAddressesPrimary: --nodeport-addresses primary: the Node's InternalIPs
// (192.168.50.1 and fd00:50::1), not the secondary 192.168.50.11.
func testNodePortAddressesPrimary(t *testing.T, e *env) {
	e.expect(t, "ext", "tcp", hostPort(cluster.Node1IP, 31060), node2Pods, sawMasqueradedBy1)
	e.expect(t, "ext", "tcp", "["+cluster.Node1IP6+"]:31030", allPods, sawMasqueradedBy1v6)
	e.expectFail(t, "ext", "tcp", hostPort(node1AltIP, 31060), "")
}
