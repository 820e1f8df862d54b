package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// TestSemantics proves, with real packets, the Service semantics of upstream
// kube-proxy (reference §1.2, §1.3 and the packet-flow groups A–M of §4.2) in every
// proxy mode: who answers and which source address the endpoint sees. One cluster per
// mode; the cases that need other kproxy flags come last, each group after a restart.
func TestSemantics(t *testing.T) {
	requireKproxy(t)
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) { runSemantics(t, mode) })
	}
}

type semCase struct {
	name string
	run  func(*testing.T, *env)
}

// semGroup is a set of cases that share one kproxy started with extra flags.
type semGroup struct {
	flags []string
	cases []semCase
}

// Secondary addresses the semantics cluster adds: a second external client (outside
// loadBalancerSourceRanges) and a second node1 address (outside nodePortAddresses).
const (
	ext2IP       = "192.168.50.101"
	node1AltIP   = "192.168.50.11"
	bridgePodIP  = "10.244.1.70"
	bridgePodGW  = "10.244.1.65"
	bridgePod    = "pod-c1"
	semBridge    = "cbr0"
	canaryTarget = "10.96.1.254:80"
)

func runSemantics(t *testing.T, mode string) {
	c := newCluster(t)
	e := &env{c: c, mode: mode}
	setupSemCluster(t, c)
	t.Cleanup(func() {
		if t.Failed() {
			if mode == "nftables" {
				t.Logf("nft list ruleset of node1 at the end:\n%s", c.NFTListRuleset(cluster.KproxyNode))
			} else {
				t.Logf("iptables-save of node1 at the end:\n%s", c.IPTablesSave(cluster.KproxyNode))
			}
		}
		if e.proxy != nil {
			e.proxy.Kill()
		}
	})
	groups := []semGroup{
		{cases: []semCase{
			{"ETPLocal", testETPLocal},
			{"ITPLocal", testITPLocal},
			{"TerminatingFallback", testTerminatingFallback},
			{"Topology", testTopology},
			{"LoadBalancerSourceRanges", testLBSourceRanges},
			{"LoadBalancerIngressModes", testLBIngressModes},
			{"LoadBalancerNoNodePorts", testLBNoNodePorts},
			{"IPv6Service", testIPv6Service},
			{"DualStackService", testDualStackService},
			{"UDPStaleEndpoint", testUDPStaleEndpoint},
			{"UDPStaleServiceIP", testUDPStaleServiceIP},
			{"SCTP", testSCTP},
			{"AffinityTimeout", testAffinityTimeout},
			{"LocalhostNodePorts", testLocalhostNodePorts},
			{"DetectLocalClusterCIDR", testDetectClusterCIDR},
			{"NodeAddressChange", testNodeAddressChange},
		}},
		{flags: []string{"--masquerade-all", "--nodeport-addresses", cluster.Node1IP + "/32," + cluster.Node1IP6 + "/128"}, cases: []semCase{
			{"MasqueradeAll", testMasqueradeAll},
			{"NodePortAddressesCIDR", testNodePortAddressesCIDR},
		}},
		{flags: []string{"--nodeport-addresses", "primary", "--detect-local-mode", "NodeCIDR"}, cases: []semCase{
			{"NodePortAddressesPrimary", testNodePortAddressesPrimary},
			{"DetectLocalNodeCIDR", testDetectNodeCIDR},
		}},
		{flags: []string{"--detect-local-mode", "BridgeInterface", "--pod-bridge-interface", semBridge}, cases: []semCase{
			{"DetectLocalBridgeInterface", testDetectBridge},
		}},
		{flags: []string{"--detect-local-mode", "InterfaceNamePrefix", "--pod-interface-name-prefix", "v-"}, cases: []semCase{
			{"DetectLocalInterfaceNamePrefix", testDetectInterfacePrefix},
		}},
	}
	for i, g := range groups {
		if i == 0 {
			e.startProxy(t, semFlags()...)
		} else if !e.restart(t, g.flags...) {
			return
		}
		e.waitSynced(t)
		for _, tc := range g.cases {
			t.Run(tc.name, func(t *testing.T) {
				e.dumpOnFailure(t)
				tc.run(t, e)
			})
		}
	}
}

// semFlags are the flags of every semantics kproxy: dual-stack ranges on top of the
// cluster package's standard flags (later flags win).
func semFlags(extra ...string) []string {
	return append([]string{
		"--cluster-cidr", cluster.ClusterCIDR + "," + cluster.ClusterCIDR6,
		"--service-cluster-ip-range", cluster.ServiceCIDR + "," + cluster.ServiceCIDR6,
	}, extra...)
}

// restart replaces kproxy with one started with the extra flags.
func (e *env) restart(t *testing.T, extra ...string) bool {
	t.Helper()
	if e.proxy != nil {
		if err := e.proxy.Stop(); err != nil {
			t.Logf("stopping kproxy: %v", err)
		}
	}
	t.Logf("restarting kproxy with %s", strings.Join(extra, " "))
	e.startProxy(t, semFlags(extra...)...)
	return true
}

// waitSynced waits until the kproxy just started has done its first sync: its
// /healthz answers 200 (503 before the first sync, like upstream), and the canary
// Service answers.
func (e *env) waitSynced(t *testing.T) {
	t.Helper()
	err := e.c.WaitFor(func() error {
		if !e.proxy.Running() {
			return fmt.Errorf("kproxy exited:\n%s", tail(e.proxy.Logs(), 30))
		}
		out, err := e.c.Exec(cluster.KproxyNode, "curl", "-s", "-m", "1", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:10256/healthz")
		if err != nil {
			return fmt.Errorf("healthz: %q %w", out, err)
		}
		if strings.TrimSpace(out) != "200" {
			return fmt.Errorf("healthz: %q", out)
		}
		return e.check("pod-a1", "tcp", canaryTarget, 1, []string{"pod-b1"}, nil)
	}, firstSync)
	if err != nil {
		t.Fatalf("kproxy not synced: %v", err)
	}
}

// setupSemCluster adds what the semantics cases need on top of the fixed topology:
// dual-stack Nodes with zones, the secondary addresses, a route on node2 that sends
// Service traffic to node1 (node2 runs no proxy), a bridged pod on node1, and the
// canary Service.
func setupSemCluster(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	steps := [][]string{
		{"ext", "ip", "addr", "add", ext2IP + "/24", "dev", "eth0"},
		{"node1", "ip", "addr", "add", node1AltIP + "/24", "dev", "eth0"},
		{"node1", "ip", "addr", "add", node1LoopbackIP + "/32", "dev", "lo"},
		{"ext", "ip", "route", "add", node1LoopbackIP + "/32", "via", cluster.Node1IP},
		{"node2", "ip", "route", "add", cluster.ServiceCIDR, "via", cluster.Node1IP},
		{"node2", "ip", "route", "add", cluster.ExtIPRange, "via", cluster.Node1IP},
		{"node2", "ip", "-6", "route", "add", cluster.ServiceCIDR6, "via", cluster.Node1IP6},
	}
	for _, s := range steps {
		if out, err := c.Exec(s[0], s[1:]...); err != nil {
			t.Fatalf("setup %v: %v: %s", s, err, out)
		}
	}
	if err := c.AddBridgePod(cluster.KproxyNode, semBridge, bridgePod, bridgePodIP, bridgePodGW, 26); err != nil {
		t.Fatal(err)
	}
	// Every pod also answers SCTP, over raw sockets (the kernel may lack SCTP ones).
	for _, p := range cluster.Pods {
		if _, err := c.StartProcess(p.Name, "sctp-"+p.Name, echoBin, "serve", "--name", p.Name, "--tcp", "", "--sctp", strconv.Itoa(sctpPort)); err != nil {
			t.Fatal(err)
		}
	}
	writeNodes(t, c, cluster.Node1IP)
	canary := svc("canary", "ClusterIP", "10.96.1.254", svcPorts(0, 0))
	e := &env{c: c}
	e.putV4(t, canary, readyEps("pod-b1"))
}
