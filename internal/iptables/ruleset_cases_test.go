package iptables

import (
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/model"
)

func clusterIPPort(name, ip string) *model.ServicePort {
	return &model.ServicePort{Name: spn("ns", name, "http"), ClusterIPs: []netip.Addr{netip.MustParseAddr(ip)}, Port: 80, Protocol: v1.ProtocolTCP}
}

func mustContain(t *testing.T, data []byte, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(string(data), l+"\n") {
			t.Errorf("ruleset lacks line %q; ruleset:\n%s", l, data)
		}
	}
}

func mustNotContain(t *testing.T, data []byte, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if strings.Contains(string(data), s) {
			t.Errorf("ruleset unexpectedly contains %q; ruleset:\n%s", s, data)
		}
	}
}

func TestNoEndpointsRejectEverywhere(t *testing.T) {
	sp := clusterIPPort("lb", "172.30.0.41")
	sp.NodePort = 3001
	sp.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.168.99.11")}
	sp.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr("1.2.3.4")}
	rs := Build(BuildInput{Params: referenceParams(), Snapshot: snapshotOf(map[*model.ServicePort][]*model.Endpoint{sp: nil}), Full: true})
	mustContain(t, rs.Data(),
		`-A KUBE-SERVICES -m comment --comment "ns/lb:http has no endpoints" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j REJECT`,
		`-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns/lb:http has no endpoints" -m tcp -p tcp -d 192.168.99.11 --dport 80 -j REJECT`,
		`-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns/lb:http has no endpoints" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j REJECT`,
		`-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns/lb:http has no endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j REJECT`,
	)
	// No nat chains at all for a Service without endpoints.
	mustNotContain(t, rs.Data(), "KUBE-SVC-", "KUBE-EXT-", "KUBE-SEP-")
}

func TestNotReadyEndpointsAreNotUsed(t *testing.T) {
	sp := clusterIPPort("web", "172.30.0.50")
	notReady := ep("10.180.0.9", 80, "node2")
	notReady.Ready, notReady.Serving = false, false
	rs := Build(BuildInput{Params: referenceParams(), Snapshot: snapshotOf(map[*model.ServicePort][]*model.Endpoint{sp: {notReady}}), Full: true})
	mustContain(t, rs.Data(), `-A KUBE-SERVICES -m comment --comment "ns/web:http has no endpoints" -m tcp -p tcp -d 172.30.0.50 --dport 80 -j REJECT`)
	mustNotContain(t, rs.Data(), "10.180.0.9")
}

func TestEqualShares(t *testing.T) {
	sp := clusterIPPort("web", "172.30.0.50")
	rs := Build(BuildInput{Params: referenceParams(), Snapshot: snapshotOf(map[*model.ServicePort][]*model.Endpoint{sp: {
		ep("10.0.0.1", 80, "a"), ep("10.0.0.2", 80, "a"), ep("10.0.0.3", 80, "a"), ep("10.0.0.4", 80, "a")}}), Full: true})
	for _, p := range []string{"0.2500000000", "0.3333333333", "0.5000000000"} {
		if !strings.Contains(string(rs.Data()), "--probability "+p) {
			t.Errorf("missing probability %s", p)
		}
	}
	if n := strings.Count(string(rs.Data()), "--probability"); n != 3 {
		t.Errorf("%d probabilistic rules, want 3 (the last endpoint's rule is unconditional)", n)
	}
}

func TestSessionAffinity(t *testing.T) {
	sp := clusterIPPort("sticky", "172.30.0.60")
	sp.StickyMaxAgeSeconds = 600
	e := ep("10.180.0.1", 80, "n")
	rs := Build(BuildInput{Params: referenceParams(), Snapshot: snapshotOf(map[*model.ServicePort][]*model.Endpoint{sp: {e}}), Full: true})
	sep := endpointChain(sp, e)
	svc := chainsFor(sp).svc
	mustContain(t, rs.Data(),
		`-A `+svc+` -m comment --comment "ns/sticky:http -> 10.180.0.1:80" -m recent --name `+sep+` --rcheck --seconds 600 --reap -j `+sep,
		`-A `+sep+` -m comment --comment ns/sticky:http -m recent --name `+sep+` --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80`,
	)
}

func TestSourceRangesFirewall(t *testing.T) {
	sp := clusterIPPort("fw", "172.30.0.41")
	sp.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr("1.2.3.4")}
	sp.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("192.168.0.0/24")}
	sp.NodePort = 3001
	snap := snapshotOf(map[*model.ServicePort][]*model.Endpoint{sp: {ep("10.180.0.1", 80, "n")}})
	snap.Node = &model.Node{Name: "n", Addresses: []netip.Addr{netip.MustParseAddr("192.168.0.2")}}
	rs := Build(BuildInput{Params: referenceParams(), Snapshot: snap, Full: true})
	c := chainsFor(sp)
	mustContain(t, rs.Data(),
		`-A KUBE-SERVICES -m comment --comment "ns/fw:http loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j `+c.fw,
		`-A `+c.fw+` -m comment --comment "ns/fw:http loadbalancer IP" -s 192.168.0.0/24 -j `+c.ext,
		// The node IP 192.168.0.2 is inside the range, so the LB IP is admitted as a source.
		`-A `+c.fw+` -m comment --comment "ns/fw:http loadbalancer IP" -s 1.2.3.4 -j `+c.ext,
		`-A KUBE-PROXY-FIREWALL -m comment --comment "ns/fw:http traffic not accepted by `+c.fw+`" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP`,
	)
}

func TestInternalPolicyLocalWithoutLocalEndpointsDrops(t *testing.T) {
	sp := clusterIPPort("itp", "172.30.1.1")
	sp.InternalPolicyLocal = true
	rs := Build(BuildInput{Params: referenceParams(), Snapshot: snapshotOf(map[*model.ServicePort][]*model.Endpoint{sp: {ep("10.0.1.3", 80, "node2")}}), Full: true})
	mustContain(t, rs.Data(), `-A KUBE-SERVICES -m comment --comment "ns/itp:http has no local endpoints" -m tcp -p tcp -d 172.30.1.1 --dport 80 -j DROP`)
	if rs.NoLocalEndpoints["internal"] != 1 {
		t.Errorf("no-local-endpoints internal = %d, want 1", rs.NoLocalEndpoints["internal"])
	}
}

func TestPartialSyncWritesOnlyChangedServices(t *testing.T) {
	a := clusterIPPort("a", "172.30.0.1")
	b := clusterIPPort("b", "172.30.0.2")
	snap := snapshotOf(map[*model.ServicePort][]*model.Endpoint{a: {ep("10.1.0.1", 80, "n")}, b: {ep("10.1.0.2", 80, "n")}})
	builder := NewBuilder()
	builder.Build(BuildInput{Params: referenceParams(), Snapshot: snap, Full: true})

	// Only b changes: its endpoint moves.
	snap.Endpoints[b.Name] = []*model.Endpoint{ep("10.1.0.3", 80, "n")}
	snap.Changed = map[types.NamespacedName]struct{}{b.Name.NamespacedName: {}}
	snap.PreviousPorts = map[types.NamespacedName][]*model.ServicePort{b.Name.NamespacedName: {b}}
	second := builder.Build(BuildInput{Params: referenceParams(), Snapshot: snap})

	mustContain(t, second.Data(),
		":"+chainsFor(b).svc+" - [0:0]",
		"-X "+endpointChain(b, ep("10.1.0.2", 80, "n")),
	)
	// The dispatch rules did not change, so KUBE-SERVICES is left alone.
	mustNotContain(t, second.Data(), ":KUBE-SERVICES", "-A KUBE-SERVICES")
	// a's chains are neither declared (which would flush them) nor deleted.
	mustNotContain(t, second.Data(), ":"+chainsFor(a).svc, "-A "+chainsFor(a).svc, "-X "+chainsFor(a).svc)
	// Nothing else changed: the filter table and KUBE-NODEPORTS are left alone.
	mustNotContain(t, second.Data(), ":KUBE-NODEPORTS", ":KUBE-FORWARD", ":KUBE-EXTERNAL-SERVICES")
}

func TestPartialSyncRewritesDispatchWhenAnAddressChanges(t *testing.T) {
	a := clusterIPPort("a", "172.30.0.1")
	b := clusterIPPort("b", "172.30.0.2")
	snap := snapshotOf(map[*model.ServicePort][]*model.Endpoint{a: {ep("10.1.0.1", 80, "n")}, b: {ep("10.1.0.2", 80, "n")}})
	builder := NewBuilder()
	builder.Build(BuildInput{Params: referenceParams(), Snapshot: snap, Full: true})

	b2 := clusterIPPort("b", "172.30.0.9")
	snap.Services[b.Name] = b2
	snap.PortsByService[b.Name.NamespacedName] = []*model.ServicePort{b2}
	snap.Changed = map[types.NamespacedName]struct{}{b.Name.NamespacedName: {}}
	snap.PreviousPorts = map[types.NamespacedName][]*model.ServicePort{b.Name.NamespacedName: {b}}
	rs := builder.Build(BuildInput{Params: referenceParams(), Snapshot: snap})
	// The flat layout's KUBE-SERVICES is rewritten whole, with both Services and the
	// NodePorts jump last.
	mustContain(t, rs.Data(),
		":KUBE-SERVICES - [0:0]",
		`-A KUBE-SERVICES -m comment --comment "ns/a:http cluster IP" -m tcp -p tcp -d 172.30.0.1 --dport 80 -j `+chainsFor(a).svc,
		`-A KUBE-SERVICES -m comment --comment "ns/b:http cluster IP" -m tcp -p tcp -d 172.30.0.9 --dport 80 -j `+chainsFor(b).svc,
	)
	var services []string
	for _, l := range strings.Split(string(rs.Data()), "\n") {
		if strings.HasPrefix(l, "-A KUBE-SERVICES ") {
			services = append(services, l)
		}
	}
	if len(services) != 3 || !strings.HasSuffix(services[2], "-j KUBE-NODEPORTS") {
		t.Errorf("nat KUBE-SERVICES = %q, want both Services and the NodePorts jump last", services)
	}
}

// iptables-nft-restore inserts each declared chain into a name-sorted list by a walk,
// so the restore must declare chains in name order to stay linear at scale.
func TestChainDeclarationsAreInNameOrder(t *testing.T) {
	eps := map[*model.ServicePort][]*model.Endpoint{}
	for i, name := range []string{"zeta", "alpha", "mid", "beta", "omega"} {
		sp := clusterIPPort(name, netip.AddrFrom4([4]byte{172, 30, 1, byte(10 + i)}).String())
		sp.NodePort = int32(30100 + i)
		eps[sp] = []*model.Endpoint{ep("10.180.0.1", 80, "node1"), ep("10.180.1.2", 80, "node2")}
	}
	rs := Build(BuildInput{Params: referenceParams(), Snapshot: snapshotOf(eps), Full: true})
	declared := 0
	for _, table := range strings.Split(string(rs.Data()), "COMMIT\n") {
		var names []string
		for _, line := range strings.Split(table, "\n") {
			if strings.HasPrefix(line, ":") {
				names = append(names, strings.Fields(line)[0][1:])
			}
		}
		declared += len(names)
		for i := 1; i < len(names); i++ {
			if names[i-1] >= names[i] {
				t.Errorf("chain %s declared after %s; declarations:\n%s", names[i], names[i-1], strings.Join(names, "\n"))
			}
		}
	}
	if declared < 5*4 {
		t.Errorf("only %d chains declared for 5 Services with 2 endpoints", declared)
	}
}

func TestPartialSyncLeavesUnchangedEndpointChains(t *testing.T) {
	svc := clusterIPPort("web", "172.30.0.9")
	e1, e2, e3, e4 := ep("10.1.0.1", 80, "n"), ep("10.1.0.2", 80, "n"), ep("10.1.0.3", 80, "n"), ep("10.1.0.4", 80, "n")
	snap := snapshotOf(map[*model.ServicePort][]*model.Endpoint{svc: {e1, e2, e3}})
	builder := NewBuilder()
	builder.Build(BuildInput{Params: referenceParams(), Snapshot: snap, Full: true})

	// e3 is replaced by e4: the SVC chain changes (its jumps), e4's chain is new, e3's
	// is deleted; e1's and e2's chains are as the kernel has them.
	snap.Endpoints[svc.Name] = []*model.Endpoint{e1, e2, e4}
	snap.Changed = map[types.NamespacedName]struct{}{svc.Name.NamespacedName: {}}
	snap.PreviousPorts = map[types.NamespacedName][]*model.ServicePort{svc.Name.NamespacedName: {svc}}
	second := builder.Build(BuildInput{Params: referenceParams(), Snapshot: snap})

	mustContain(t, second.Data(),
		":"+chainsFor(svc).svc+" - [0:0]",
		":"+endpointChain(svc, e4)+" - [0:0]",
		"-A "+endpointChain(svc, e4)+" -m comment --comment ns/web:http -m tcp -p tcp -j DNAT --to-destination 10.1.0.4:80",
		"-X "+endpointChain(svc, e3),
	)
	for _, kept := range []*model.Endpoint{e1, e2} {
		mustNotContain(t, second.Data(), ":"+endpointChain(svc, kept), "-A "+endpointChain(svc, kept), "-X "+endpointChain(svc, kept))
	}

	// The builder still knows e1's chain: removing e1 later deletes it.
	snap.Endpoints[svc.Name] = []*model.Endpoint{e2, e4}
	third := builder.Build(BuildInput{Params: referenceParams(), Snapshot: snap})
	mustContain(t, third.Data(), "-X "+endpointChain(svc, e1))
}
