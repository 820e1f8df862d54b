package e2e

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// testLBSourceRanges: group C. Two ingress IPs; ext (192.168.50.100) is inside
// loadBalancerSourceRanges, ext's second address is not and is dropped; the range
// never applies to the NodePort (C3); node1 itself is in the range (C7).
func testLBSourceRanges(t *testing.T, e *env) {
	s := svc("lb", "LoadBalancer", "10.96.1.20", svcPorts(31020, 31021),
		withLBIngress("192.168.60.20", "192.168.60.21"), func(s *v1.Service) {
			s.Spec.LoadBalancerSourceRanges = []string{" 192.168.50.100/32", "192.168.50.0/29"}
		})
	e.putV4(t, s, readyEps(allPods...))
	for _, vip := range []string{"192.168.60.20", "192.168.60.21"} {
		e.expect(t, "ext", "tcp", vip+":80", allPods, sawMasqueradedBy1)
		e.expect(t, "ext", "udp", vip+":53", allPods, sawMasqueradedBy1)
		e.expectFail(t, "ext", "tcp", vip+":80", "timeout", cluster.SourceIP(ext2IP))
		e.expectFail(t, "ext", "udp", vip+":53", "timeout", cluster.SourceIP(ext2IP))
		// C6: a pod is outside the ranges too.
		e.expectFail(t, "pod-a1", "tcp", vip+":80", "timeout")
		// C7: node1's address 192.168.50.1 is in 192.168.50.0/29.
		e.expect(t, "node1", "tcp", vip+":80", allPods, nil)
	}
	e.expect(t, "ext", "tcp", hostPort(cluster.Node1IP, 31020), allPods, sawMasqueradedBy1, cluster.SourceIP(ext2IP))
	// The ClusterIP is not an LB VIP: no source filter.
	e.expect(t, "pod-a1", "tcp", "10.96.1.20:80", allPods, sawFromPod("pod-a1"))
}

// testLBIngressModes: ingress IPs with ipMode VIP or unset are programmed; ipMode
// Proxy is not (the load balancer proxies to NodePorts itself): traffic to it is not
// DNATed, so node1 routes it on to the LAN's dead end.
func testLBIngressModes(t *testing.T, e *env) {
	vip, proxyMode := v1.LoadBalancerIPModeVIP, v1.LoadBalancerIPModeProxy
	s := svc("lb-modes", "LoadBalancer", "10.96.1.22", svcPorts(31022, 31023), func(s *v1.Service) {
		s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{
			{IP: "192.168.60.22", IPMode: &vip}, {IP: "192.168.60.23"}, {IP: "192.168.60.24", IPMode: &proxyMode},
		}
	})
	e.putV4(t, s, readyEps(node2Pods...))
	e.expect(t, "ext", "tcp", "192.168.60.22:80", node2Pods, sawMasqueradedBy1)
	e.expect(t, "ext", "tcp", "192.168.60.23:80", node2Pods, sawMasqueradedBy1)
	e.expectFail(t, "ext", "tcp", "192.168.60.24:80", "unreachable")
	e.expectFail(t, "ext", "udp", "192.168.60.24:53", "")
	// The NodePort of the same Service does answer: only the Proxy-mode VIP is skipped.
	e.expect(t, "ext", "tcp", hostPort(cluster.Node1IP, 31022), node2Pods, sawMasqueradedBy1)
}

// testLBNoNodePorts: allocateLoadBalancerNodePorts=false: no NodePort is allocated or
// programmed, the LB IP still works.
func testLBNoNodePorts(t *testing.T, e *env) {
	no := false
	s := svc("lb-nonp", "LoadBalancer", "10.96.1.24", svcPorts(0, 0), withLBIngress("192.168.60.25"),
		func(s *v1.Service) { s.Spec.AllocateLoadBalancerNodePorts = &no })
	e.putV4(t, s, readyEps(allPods...))
	e.expect(t, "ext", "tcp", "192.168.60.25:80", allPods, sawMasqueradedBy1)
	ips, ports, err := e.c.Allocation(semNS + "/lb-nonp")
	if err != nil {
		t.Fatalf("allocation of %s/lb-nonp: %v", semNS, err)
	}
	if len(ports) != 0 {
		t.Errorf("%s/lb-nonp with allocateLoadBalancerNodePorts=false got NodePorts %v (ips %v), want none", semNS, ports, ips)
	}
	// Cross-check in the kernel: no NodePort rule or map element names the Service.
	if e.mode == "nftables" {
		out, err := e.c.Exec(cluster.KproxyNode, "nft", "list", "map", "ip", "kube-proxy", "service-nodeports")
		if err != nil || strings.Contains(out, "lb-nonp") {
			t.Errorf("nft service-nodeports map (err %v) mentions lb-nonp:\n%s", err, out)
		}
	} else if rules := cluster.RulesMatching(cluster.RulesMatching(e.c.IPTablesSave(cluster.KproxyNode), "lb-nonp"), "KUBE-NODEPORTS"); rules != "" {
		t.Errorf("iptables NodePort rules for lb-nonp:\n%s", rules)
	}
}
