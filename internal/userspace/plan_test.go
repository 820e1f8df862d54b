package userspace

import (
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/model"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func portName(name string, proto v1.Protocol) model.ServicePortName {
	return model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: name}, Port: "p", Protocol: proto}
}

func TestPlanListenersAddressesAndPolicies(t *testing.T) {
	web := &model.ServicePort{Name: portName("web", v1.ProtocolTCP), ClusterIPs: addrs("10.96.0.10", "fd00::10"), Port: 80, Protocol: v1.ProtocolTCP,
		NodePort: 30080, ExternalIPs: addrs("192.168.70.10"), LoadBalancerIPs: addrs("192.168.60.10"),
		LoadBalancerSourceRanges: []netip.Prefix{netip.MustParsePrefix("192.168.50.0/24")}, ExternalPolicyLocal: true, StickyMaxAgeSeconds: 60}
	empty := &model.ServicePort{Name: portName("empty", v1.ProtocolUDP), ClusterIPs: addrs("10.96.0.20"), Port: 53, Protocol: v1.ProtocolUDP, NodePort: 30053}
	snap := &model.Snapshot{
		Services: map[model.ServicePortName]*model.ServicePort{web.Name: web, empty.Name: empty},
		Endpoints: map[model.ServicePortName][]*model.Endpoint{
			web.Name: {
				{IP: netip.MustParseAddr("10.244.1.11"), Port: 8080, Ready: true, Serving: true, IsLocal: true},
				{IP: netip.MustParseAddr("10.244.2.11"), Port: 8080, Ready: true, Serving: true},
				{IP: netip.MustParseAddr("fd00:244::11"), Port: 8080, Ready: true, Serving: true},
			},
		},
	}
	p := makePlan(snap, model.IPv4, nodePortTargets{all: true})
	for _, a := range []string{"10.96.0.10", "192.168.70.10", "192.168.60.10", "10.96.0.20"} {
		if _, ok := p.addrs[netip.MustParseAddr(a)]; !ok {
			t.Errorf("address %s not planned (Services without endpoints keep theirs too)", a)
		}
	}
	if len(p.addrs) != 4 {
		t.Errorf("addresses = %v, want 4 IPv4 ones", p.addrs)
	}
	want := map[string]bool{"TCP/10.96.0.10:80": false, "TCP/192.168.70.10:80": true, "TCP/192.168.60.10:80": true, "TCP/0.0.0.0:30080": true}
	if len(p.listeners) != len(want) {
		t.Errorf("listeners = %v, want %v (none for the Service without endpoints)", p.listeners, want)
	}
	for k, spec := range p.listeners {
		ext, ok := want[k.String()]
		if !ok || spec.external != ext {
			t.Errorf("listener %s external=%v unexpected", k, spec.external)
		}
		if (spec.firewall != nil) != (k.String() == "TCP/192.168.60.10:80") {
			t.Errorf("listener %s firewalled=%v: only the LoadBalancer IP has source ranges", k, spec.firewall != nil)
		}
	}
	sets := p.balancers[web.Name]
	if len(sets.cluster) != 2 || len(sets.local) != 1 || sets.local[0].String() != "10.244.1.11:8080" || sets.sticky.Seconds() != 60 {
		t.Errorf("endpoint sets = %+v", sets)
	}

	// Policy choice: external clients of an eTP Local Service get the Local set; pods
	// and the node reaching the same NodePort get the internal (Cluster) set.
	env := &relayEnv{clusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}
	node := map[netip.Addr]struct{}{netip.MustParseAddr("192.168.50.1"): {}}
	env.nodeAddrs.Store(&node)
	np := &route{spec: p.listeners[listenerKey{proto: v1.ProtocolTCP, addr: netip.MustParseAddrPort("0.0.0.0:30080")}]}
	cases := map[string]policySet{"192.168.50.100": localSet, "10.244.2.11": clusterSet, "192.168.50.1": clusterSet, "127.0.0.1": clusterSet}
	for client, want := range cases {
		if got := np.setFor(netip.MustParseAddr(client), env); got != want {
			t.Errorf("NodePort client %s: set %v, want %v", client, got, want)
		}
	}
	lb := &route{spec: p.listeners[listenerKey{proto: v1.ProtocolTCP, addr: netip.MustParseAddrPort("192.168.60.10:80")}]}
	if lb.allowed(netip.MustParseAddr("192.168.51.1")) || !lb.allowed(netip.MustParseAddr("192.168.50.100")) {
		t.Errorf("loadBalancerSourceRanges not applied on the LB IP listener")
	}

	// IPv6 plan: only the IPv6 ClusterIP and endpoint; specific NodePort addresses.
	p6 := makePlan(snap, model.IPv6, nodePortTargets{addrs: addrs("fd00:50::1", "192.168.50.1")})
	if _, ok := p6.listeners[listenerKey{proto: v1.ProtocolTCP, addr: netip.MustParseAddrPort("[fd00:50::1]:30080")}]; !ok || len(p6.listeners) != 2 {
		t.Errorf("IPv6 listeners = %v, want the ClusterIP and one NodePort address", p6.listeners)
	}
}
