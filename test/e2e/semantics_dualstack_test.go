package e2e

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// sawFromPod6 is sawFromPod for IPv6: the pod's IPv6 address, or node1's IPv6 pod
// gateway when the pod reached itself (hairpin).
func sawFromPod6(client string) seenFn {
	c := cluster.PodByName(client)
	return func(backend string) string {
		if backend == client {
			return cluster.Node1PodGW6
		}
		return cluster.PodIP6(c)
	}
}

func withFamilies(policy v1.IPFamilyPolicy, fams ...v1.IPFamily) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.IPFamilyPolicy = &policy
		s.Spec.IPFamilies = fams
	}
}

// testIPv6Service: an IPv6-only Service with IPv6 endpoints, through ip6tables or the
// ip6 nftables table: ClusterIP from a pod (unmasqueraded), NodePort and externalIP
// from ext (masqueraded), TCP and UDP.
func testIPv6Service(t *testing.T, e *env) {
	s := svc("v6", "NodePort", "fd00:10:96::30", svcPorts(31030, 31031),
		withFamilies(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol), withExternalIPs("fd00:70::30"))
	e.put(t, s, epSlice(s, "v6", discoveryv1.AddressTypeIPv6, readyEps(allPods...)))
	e.expect(t, "pod-a1", "tcp", "[fd00:10:96::30]:80", allPods, sawFromPod6("pod-a1"))
	e.expect(t, "pod-a2", "udp", "[fd00:10:96::30]:53", allPods, sawFromPod6("pod-a2"))
	for _, target := range []string{"[" + cluster.Node1IP6 + "]:31030", "[fd00:70::30]:80"} {
		e.expect(t, "ext", "tcp", target, allPods, sawMasqueradedBy1v6)
	}
	e.expect(t, "ext", "udp", "["+cluster.Node1IP6+"]:31031", allPods, sawMasqueradedBy1v6)
	// The IPv4 family has no trace of it: the IPv4 NodePort is not served.
	e.expectFail(t, "ext", "tcp", hostPort(cluster.Node1IP, 31030), "")
	// eTP Local over IPv6: only node1's endpoints, ext's IPv6 address preserved.
	local := svc("v6-local", "NodePort", "fd00:10:96::32", svcPorts(31033, 31034),
		withFamilies(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol), withETPLocal(0))
	e.put(t, local, epSlice(local, "v6", discoveryv1.AddressTypeIPv6, readyEps(allPods...)))
	e.expect(t, "ext", "tcp", "["+cluster.Node1IP6+"]:31033", node1Pods, sawUnmasqueraded(cluster.ExtIP6))
}

// testDualStackService: a RequireDualStack Service answers on both families at once,
// each family reaching that family's endpoints.
func testDualStackService(t *testing.T, e *env) {
	s := svc("ds", "NodePort", "", svcPorts(31035, 31036),
		withFamilies(v1.IPFamilyPolicyRequireDualStack, v1.IPv4Protocol, v1.IPv6Protocol),
		withExternalIPs("192.168.70.31", "fd00:70::31"),
		func(s *v1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.96.1.31", []string{"10.96.1.31", "fd00:10:96::31"}
		})
	e.put(t, s,
		epSlice(s, "v4", discoveryv1.AddressTypeIPv4, readyEps("pod-a1", "pod-b1")),
		epSlice(s, "v6", discoveryv1.AddressTypeIPv6, readyEps("pod-a2", "pod-b2")))
	e.expect(t, "pod-a2", "tcp", "10.96.1.31:80", []string{"pod-a1", "pod-b1"}, sawFromPod("pod-a2"))
	e.expect(t, "pod-a1", "tcp", "[fd00:10:96::31]:80", []string{"pod-a2", "pod-b2"}, sawFromPod6("pod-a1"))
	e.expect(t, "ext", "tcp", hostPort(cluster.Node1IP, 31035), []string{"pod-a1", "pod-b1"}, sawMasqueradedBy1)
	e.expect(t, "ext", "tcp", "["+cluster.Node1IP6+"]:31035", []string{"pod-a2", "pod-b2"}, sawMasqueradedBy1v6)
	e.expect(t, "ext", "udp", "192.168.70.31:53", []string{"pod-a1", "pod-b1"}, sawMasqueradedBy1)
	e.expect(t, "ext", "udp", "[fd00:70::31]:53", []string{"pod-a2", "pod-b2"}, sawMasqueradedBy1v6)

	// PreferDualStack with one family's endpoints only: that family answers, the other
	// is rejected (it has no endpoints).
	p := svc("ds-prefer", "ClusterIP", "", svcPorts(0, 0),
		withFamilies(v1.IPFamilyPolicyPreferDualStack, v1.IPv6Protocol, v1.IPv4Protocol),
		func(s *v1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "fd00:10:96::33", []string{"fd00:10:96::33", "10.96.1.33"}
		})
	e.put(t, p, epSlice(p, "v6", discoveryv1.AddressTypeIPv6, readyEps("pod-b1")))
	e.expect(t, "pod-a1", "tcp", "[fd00:10:96::33]:80", []string{"pod-b1"}, sawFromPod6("pod-a1"))
	e.expectFail(t, "pod-a1", "tcp", "10.96.1.33:80", "refused")
}
