package nftables

import (
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/internal/model"
)

func syncOne(t *testing.T, p Params, sp *model.ServicePort, eps ...*model.Endpoint) []string {
	t.Helper()
	w := newWorld()
	w.set(sp, eps...)
	tp := newTestProxier(p)
	tp.sync(t, w.snapshot(), true)
	return tp.dumpLines()
}

func webPort() *model.ServicePort {
	return &model.ServicePort{Name: spn("ns", "web", "http"), ClusterIPs: addrs("172.30.0.10"), Port: 80, Protocol: v1.ProtocolTCP}
}

const (
	webSvc = "service-Y6QD5CCT-ns/web/tcp/http"
	webExt = "external-Y6QD5CCT-ns/web/tcp/http"
	webLoc = "local-Y6QD5CCT-ns/web/tcp/http"
	webFW  = "firewall-Y6QD5CCT-ns/web/tcp/http"
)

func TestWebChainName(t *testing.T) {
	if got := prefixService + portBase(webPort()); got != webSvc {
		t.Fatalf("fixture name %q, computed %q", webSvc, got)
	}
}

func TestNoEndpointsRejectEverywhere(t *testing.T) {
	sp := webPort()
	sp.NodePort = 3001
	sp.ExternalIPs = addrs("192.168.99.11")
	sp.LoadBalancerIPs = addrs("1.2.3.4")
	got := syncOne(t, referenceParams(), sp)
	mustHave(t, got,
		`add element ip kube-proxy cluster-ips { 172.30.0.10 }`,
		`add element ip kube-proxy no-endpoint-services { 172.30.0.10 . tcp . 80 comment "ns/web:http" : goto reject-chain }`,
		`add element ip kube-proxy no-endpoint-services { 192.168.99.11 . tcp . 80 comment "ns/web:http" : goto reject-chain }`,
		`add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns/web:http" : goto reject-chain }`,
		`add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns/web:http" : goto reject-chain }`,
	)
	mustNotMention(t, got, "Y6QD5CCT", "element ip kube-proxy service-ips", "element ip kube-proxy service-nodeports")
}

func TestNotReadyEndpointsAreNotUsed(t *testing.T) {
	notReady := ep("10.180.0.9", 80, "node2")
	notReady.Ready, notReady.Serving = false, false
	got := syncOne(t, referenceParams(), webPort(), notReady)
	mustHave(t, got, `add element ip kube-proxy no-endpoint-services { 172.30.0.10 . tcp . 80 comment "ns/web:http" : goto reject-chain }`)
	mustNotMention(t, got, "10.180.0.9")
}

func TestInternalTrafficPolicyLocalWithoutLocalEndpointsDrops(t *testing.T) {
	sp := webPort()
	sp.InternalPolicyLocal = true
	got := syncOne(t, referenceParams(), sp, ep("10.180.0.1", 80, "node2"))
	mustHave(t, got, `add element ip kube-proxy no-endpoint-services { 172.30.0.10 . tcp . 80 comment "ns/web:http" : drop }`)
	mustNotMention(t, got, webSvc, webLoc)

	got = syncOne(t, referenceParams(), sp, ep("10.180.0.1", 80, "node2"), ep("10.180.0.2", 80, "test-node"))
	mustHave(t, got, "add element ip kube-proxy service-ips { 172.30.0.10 . tcp . 80 : goto "+webLoc+" }")
	mustHave(t, got, dispatch("ip", webLoc, "10.180.0.2 . 80")...)
	mustNotMention(t, got, "10.180.0.1 ", webSvc)
}

func TestExternalTrafficPolicyClusterMasquerades(t *testing.T) {
	sp := webPort()
	sp.NodePort = 3001
	sp.ExternalIPs = addrs("192.168.99.11")
	got := syncOne(t, referenceParams(), sp, ep("10.180.0.1", 80, "node2"))
	mustHave(t, got,
		"add rule ip kube-proxy "+webExt+` mark set mark or 0x4000 comment "masquerade"`,
		"add rule ip kube-proxy "+webExt+" goto "+webSvc,
		"add element ip kube-proxy service-ips { 192.168.99.11 . tcp . 80 : goto "+webExt+" }",
		"add element ip kube-proxy service-nodeports { tcp . 3001 : goto "+webExt+" }")
	mustHave(t, got, dispatch("ip", webSvc, "10.180.0.1 . 80")...)
}

func TestExternalTrafficPolicyLocalWithoutLocalEndpointsDropsExternalOnly(t *testing.T) {
	sp := webPort()
	sp.NodePort = 3001
	sp.ExternalPolicyLocal = true
	got := syncOne(t, referenceParams(), sp, ep("10.180.0.1", 80, "node2"))
	mustHave(t, got,
		"add element ip kube-proxy service-ips { 172.30.0.10 . tcp . 80 : goto "+webSvc+" }",
		`add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns/web:http" : drop }`,
		// Pods and the node itself still reach the cluster-wide endpoints.
		"add element ip kube-proxy service-nodeports { tcp . 3001 : goto "+webExt+" }",
		"add rule ip kube-proxy "+webExt+` ip saddr 10.0.0.0/8 goto `+webSvc+` comment "short-circuit pod traffic"`,
		"add rule ip kube-proxy "+webExt+` fib saddr type local goto `+webSvc+` comment "short-circuit local traffic"`)
	mustNotMention(t, got, webLoc)
}

func TestLoadBalancerSourceRanges(t *testing.T) {
	sp := webPort()
	sp.LoadBalancerIPs = addrs("1.2.3.4", "fd00::4")
	sp.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("fd00::/8")}
	// The firewall filters before DNAT: it exists even without endpoints.
	got := syncOne(t, referenceParams(), sp)
	mustHave(t, got,
		"add element ip kube-proxy firewall-ips { 1.2.3.4 . tcp . 80 : goto "+webFW+" }",
		// 192.168.0.0/16 holds the node IP, so the LB IP itself is admitted too.
		"add rule ip kube-proxy "+webFW+" ip saddr != { 203.0.113.0/24, 192.168.0.0/16, 1.2.3.4 } drop",
		`add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns/web:http" : goto reject-chain }`)

	sp.LoadBalancerSourceRanges = append(sp.LoadBalancerSourceRanges, netip.MustParsePrefix("0.0.0.0/0"))
	got = syncOne(t, referenceParams(), sp, ep("10.180.0.1", 80, "node2"))
	mustNotMention(t, got, webFW)
	mustHave(t, got, "add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto "+webExt+" }")
}

func TestMasqueradeModes(t *testing.T) {
	p := referenceParams()
	p.MasqueradeAll, p.MasqueradeBit = true, 3
	got := syncOne(t, p, webPort(), ep("10.180.0.1", 80, "node2"))
	mustHave(t, got,
		`add rule ip kube-proxy services ip daddr @cluster-ips mark set mark or 0x8 comment "masquerade all clusterIP traffic"`,
		"add rule ip kube-proxy masquerading mark and 0x8 != 0 mark set mark xor 0x8 masquerade fully-random")

	p = referenceParams()
	p.LocalDetector = DetectByInterfacePrefix("veth")
	got = syncOne(t, p, webPort(), ep("10.180.0.1", 80, "node2"))
	mustHave(t, got, `add rule ip kube-proxy services ip daddr @cluster-ips iifname != "veth*" mark set mark or 0x4000 comment "masquerade clusterIP traffic from outside cluster"`)

	p.LocalDetector = DetectByBridge("cbr0")
	got = syncOne(t, p, webPort(), ep("10.180.0.1", 80, "node2"))
	mustHave(t, got, `add rule ip kube-proxy services ip daddr @cluster-ips iifname != "cbr0" mark set mark or 0x4000 comment "masquerade clusterIP traffic from outside cluster"`)

	// Without a detector ClusterIP traffic is never marked.
	p.LocalDetector = LocalDetector{}
	got = syncOne(t, p, webPort(), ep("10.180.0.1", 80, "node2"))
	mustNotMention(t, got, "services ip daddr @cluster-ips")
}

func TestNodePortsOnEveryLocalAddress(t *testing.T) {
	p := referenceParams()
	p.NodePortAll = true
	got := syncOne(t, p, webPort())
	mustHave(t, got,
		"add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
		"add rule ip kube-proxy nodeport-endpoints-check ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports")
	mustNotMention(t, got, "@nodeport-ips", "element ip kube-proxy nodeport-ips")
}

func TestNodePortAddressesChangeOnPartialSync(t *testing.T) {
	w := newWorld()
	w.set(webPort())
	tp := newTestProxier(referenceParams())
	// The node's parameters of each sync come with the snapshot (nodeaddr.Resolver).
	withNodePorts := func(s *model.Snapshot, ips ...string) *model.Snapshot {
		s.Nodes = map[model.Family]model.NodeParams{model.IPv4: {Family: model.IPv4, NodePortIPs: addrs(ips...),
			LocalTraffic: model.LocalTraffic{CIDR: netip.MustParsePrefix("10.0.0.0/8")}}}
		return s
	}
	tp.sync(t, withNodePorts(w.snapshot(), "192.168.0.2", "127.0.0.1"), true)
	mustHave(t, tp.dumpLines(), "add element ip kube-proxy nodeport-ips { 192.168.0.2 }")
	mustNotMention(t, tp.dumpLines(), "127.0.0.1 }")

	tp.sync(t, withNodePorts(w.snapshot(), "192.168.0.3"), false)
	sameLines(t, "transaction", tp.txLines(), []string{
		"delete element ip kube-proxy nodeport-ips { 192.168.0.2 }",
		"add element ip kube-proxy nodeport-ips { 192.168.0.3 }",
	})
}

func TestIPv6(t *testing.T) {
	p := Params{Family: model.IPv6, MasqueradeBit: 14, LocalDetector: DetectByCIDR(netip.MustParsePrefix("fd00:10::/64")),
		NodePortIPs: addrs("fd00:192::2"), ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16"), netip.MustParsePrefix("fd00:30::/112")}}
	dual := webPort()
	dual.ClusterIPs = addrs("172.30.0.10", "fd00:30::10")
	dual.NodePort = 3001
	dual.StickyMaxAgeSeconds = 0
	v4only := &model.ServicePort{Name: spn("ns", "v4only", "http"), ClusterIPs: addrs("172.30.0.11"), Port: 80, Protocol: v1.ProtocolTCP}
	one := &model.ServicePort{Name: spn("ns", "one", "http"), ClusterIPs: addrs("fd00:30::12"), Port: 80, Protocol: v1.ProtocolUDP, StickyMaxAgeSeconds: 30}
	one.Name.Protocol = v1.ProtocolUDP
	w := newWorld()
	w.node.Addresses = addrs("192.168.0.2", "fd00:192::2")
	w.set(dual, ep("10.180.0.1", 80, "node2"), ep("fd00:10::1", 80, "node2"), ep("fd00:10::2", 80, "test-node"))
	w.set(v4only, ep("10.180.0.2", 80, "node2"))
	w.set(one, ep("fd00:10::3", 53, "node2"))
	tp := newTestProxier(p)
	tp.sync(t, w.snapshot(), true)
	got := tp.dumpLines()
	oneEP := endpointBase(one, ep("fd00:10::3", 53, ""))
	mustHave(t, got,
		"add set ip6 kube-proxy cluster-ips { type ipv6_addr ; comment \"Active ClusterIPs\" ; }",
		"add element ip6 kube-proxy cluster-ips { fd00:30::10 }",
		"add element ip6 kube-proxy service-ips { fd00:30::10 . tcp . 80 : goto "+webSvc+" }",
		"add map ip6 kube-proxy "+webSvc+" { typeof numgen random mod 65536 : ip6 daddr . th dport ; flags interval ; }",
		"add element ip6 kube-proxy hairpin-connections { fd00:10::2 . fd00:10::2 . tcp . 80 }",
		"add element ip6 kube-proxy nodeport-ips { fd00:192::2 }",
		"add rule ip6 kube-proxy cluster-ips-check ip6 daddr { fd00:30::/112 } drop comment \"Drop traffic to unallocated ClusterIPs\"",
		"add rule ip6 kube-proxy services ip6 daddr @cluster-ips ip6 saddr != fd00:10::/64 mark set mark or 0x4000 comment \"masquerade clusterIP traffic from outside cluster\"",
		"add set ip6 kube-proxy affinity-"+oneEP+" { type ipv6_addr ; flags dynamic,timeout ; timeout 30s ; }",
		"add rule ip6 kube-proxy endpoint-"+oneEP+" update @affinity-"+oneEP+" { ip6 saddr }",
		"add rule ip6 kube-proxy endpoint-"+oneEP+" meta l4proto udp dnat to [fd00:10::3]:53",
	)
	mustHave(t, got, dispatch("ip6", webSvc, "fd00:10::1 . 80", "fd00:10::2 . 80")...)
	mustNotMention(t, got, "172.30.0.", "10.180.0.", "v4only", "192.168.0.2")
}

// TestNoLocalEndpointsCount: like upstream, the ports whose Local policy finds no
// local endpoint are counted per policy (sync_proxy_rules_no_local_endpoints_total),
// and the count follows partial syncs.
func TestNoLocalEndpointsCount(t *testing.T) {
	w := newWorld()
	itp := &model.ServicePort{Name: spn("ns", "itp", "http"), ClusterIPs: addrs("172.30.0.50"), Port: 80, Protocol: v1.ProtocolTCP, InternalPolicyLocal: true}
	etp := &model.ServicePort{Name: spn("ns", "etp", "http"), ClusterIPs: addrs("172.30.0.51"), Port: 80, Protocol: v1.ProtocolTCP,
		NodePort: 30051, ExternalPolicyLocal: true}
	none := &model.ServicePort{Name: spn("ns", "none", "http"), ClusterIPs: addrs("172.30.0.52"), Port: 80, Protocol: v1.ProtocolTCP,
		NodePort: 30052, ExternalPolicyLocal: true, InternalPolicyLocal: true}
	w.set(itp, ep("10.180.0.1", 80, "node2"))
	w.set(etp, ep("10.180.0.2", 80, "node2"))
	w.set(none) // no endpoints at all: rejected, not counted
	tp := newTestProxier(referenceParams())
	tp.sync(t, w.snapshot(), true)
	if i, e := tp.state.noLocalEndpoints(); i != 1 || e != 1 {
		t.Errorf("no-local-endpoint ports: internal %d, external %d; want 1 and 1", i, e)
	}
	w.set(etp, ep("10.180.0.2", 80, "node2"), ep("10.180.0.3", 80, "test-node"))
	tp.sync(t, w.snapshot(), false)
	if i, e := tp.state.noLocalEndpoints(); i != 1 || e != 0 {
		t.Errorf("after a local endpoint came: internal %d, external %d; want 1 and 0", i, e)
	}
	metric := func(policy string) float64 {
		return testutil.ToFloat64(tp.metrics.NoLocalEndpointsTotal.WithLabelValues(policy, "IPv4"))
	}
	if metric("internal") != 1 || metric("external") != 0 {
		t.Errorf("sync_proxy_rules_no_local_endpoints_total: internal %v, external %v; want 1 and 0", metric("internal"), metric("external"))
	}
}
