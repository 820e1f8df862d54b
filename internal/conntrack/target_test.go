package conntrack

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kproxy/kproxy/internal/model"
)

// flow builds a conntrack flow from "ip:port" strings: the original direction goes
// client → dst, the reply comes from replySrc (the DNAT target) back to the client.
func flow(proto uint8, client, dst, replySrc string) *netlink.ConntrackFlow {
	c, d, r := netip.MustParseAddrPort(client), netip.MustParseAddrPort(dst), netip.MustParseAddrPort(replySrc)
	fam := uint8(unix.AF_INET)
	if d.Addr().Is6() {
		fam = unix.AF_INET6
	}
	return &netlink.ConntrackFlow{
		FamilyType: fam,
		Forward: netlink.IPTuple{Protocol: proto,
			SrcIP: net.IP(c.Addr().AsSlice()), SrcPort: c.Port(),
			DstIP: net.IP(d.Addr().AsSlice()), DstPort: d.Port()},
		Reverse: netlink.IPTuple{Protocol: proto,
			SrcIP: net.IP(r.Addr().AsSlice()), SrcPort: r.Port(),
			DstIP: net.IP(c.Addr().AsSlice()), DstPort: c.Port()},
	}
}

func keep(eps ...string) map[netip.AddrPort]struct{} {
	m := map[netip.AddrPort]struct{}{}
	for _, ep := range eps {
		m[netip.MustParseAddrPort(ep)] = struct{}{}
	}
	return m
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

const udp, sctp, tcp = unix.IPPROTO_UDP, unix.IPPROTO_SCTP, unix.IPPROTO_TCP

func TestFlowMatcher(t *testing.T) {
	dns := Target{
		Protocol:   udp,
		ServiceIPs: addrs("10.96.0.10", "192.0.2.50", "fd00:96::10"), // ClusterIP, LB IP, other family
		Port:       53,
		NodePort:   30053,
		Keep:       keep("10.244.1.5:5353", "10.244.2.7:5353"),
	}
	gone := Target{Protocol: udp, ServiceIPs: addrs("10.96.0.20"), Port: 9999} // no endpoints left
	sig := Target{Protocol: sctp, ServiceIPs: addrs("10.96.0.30"), Port: 3868, Keep: keep("10.244.3.3:3868")}

	cases := []struct {
		name string
		flow *netlink.ConntrackFlow
		want bool
	}{
		{"ClusterIP flow to a kept endpoint", flow(udp, "10.0.0.1:40000", "10.96.0.10:53", "10.244.1.5:5353"), false},
		{"ClusterIP flow to another kept endpoint", flow(udp, "10.0.0.1:40001", "10.96.0.10:53", "10.244.2.7:5353"), false},
		{"ClusterIP flow to a removed endpoint", flow(udp, "10.0.0.1:40000", "10.96.0.10:53", "10.244.9.9:5353"), true},
		{"kept endpoint IP but old target port", flow(udp, "10.0.0.1:40000", "10.96.0.10:53", "10.244.1.5:53"), true},
		{"flow to the service that was never DNATed", flow(udp, "10.0.0.1:40000", "10.96.0.10:53", "10.96.0.10:53"), true},
		{"LB IP flow to a removed endpoint", flow(udp, "203.0.113.9:5000", "192.0.2.50:53", "10.244.9.9:5353"), true},
		{"LB IP flow to a kept endpoint", flow(udp, "203.0.113.9:5000", "192.0.2.50:53", "10.244.1.5:5353"), false},
		{"NodePort flow on any node IP to a removed endpoint", flow(udp, "203.0.113.9:5000", "172.18.0.3:30053", "10.244.9.9:5353"), true},
		{"NodePort flow to a kept endpoint", flow(udp, "203.0.113.9:5000", "172.18.0.3:30053", "10.244.2.7:5353"), false},
		{"same ClusterIP, other port", flow(udp, "10.0.0.1:40000", "10.96.0.10:54", "10.244.9.9:5353"), false},
		{"same ClusterIP and port but TCP", flow(tcp, "10.0.0.1:40000", "10.96.0.10:53", "10.244.9.9:5353"), false},
		{"TCP to a NodePort number", flow(tcp, "203.0.113.9:5000", "172.18.0.3:30053", "10.244.9.9:5353"), false},
		{"unrelated UDP flow", flow(udp, "10.0.0.1:40000", "8.8.8.8:53", "8.8.8.8:53"), false},
		{"service whose endpoints are all gone", flow(udp, "10.0.0.1:40000", "10.96.0.20:9999", "10.244.1.5:8080"), true},
		{"SCTP flow to a removed endpoint", flow(sctp, "10.0.0.1:40000", "10.96.0.30:3868", "10.244.9.9:3868"), true},
		{"SCTP flow to a kept endpoint", flow(sctp, "10.0.0.1:40000", "10.96.0.30:3868", "10.244.3.3:3868"), false},
		{"UDP to the SCTP service port", flow(udp, "10.0.0.1:40000", "10.96.0.30:3868", "10.244.9.9:3868"), false},
	}
	m, err := newFlowMatcher(model.IPv4, []Target{dns, gone, sig})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		if got := m.MatchConntrackFlow(tc.flow); got != tc.want {
			t.Errorf("%s: stale = %v, want %v (flow %s)", tc.name, got, tc.want, tc.flow)
		}
	}
}

func TestFlowMatcherIPv6(t *testing.T) {
	target := Target{Protocol: udp, ServiceIPs: addrs("10.96.0.10", "fd00:96::10"), Port: 53,
		Keep: keep("[fd00:244::5]:5353")}
	m, err := newFlowMatcher(model.IPv6, []Target{target})
	if err != nil {
		t.Fatal(err)
	}
	if !m.MatchConntrackFlow(flow(udp, "[fd00::1]:40000", "[fd00:96::10]:53", "[fd00:244::9]:5353")) {
		t.Error("IPv6 flow to a removed endpoint is not stale")
	}
	if m.MatchConntrackFlow(flow(udp, "[fd00::1]:40000", "[fd00:96::10]:53", "[fd00:244::5]:5353")) {
		t.Error("IPv6 flow to a kept endpoint is stale")
	}
	// The IPv4 ClusterIP belongs to the other family's Clean call.
	if m.MatchConntrackFlow(flow(udp, "10.0.0.1:40000", "10.96.0.10:53", "10.244.9.9:5353")) {
		t.Error("IPv4 flow matched by an IPv6 cleaner")
	}
}

func TestFlowMatcherServiceIPBeatsNodePort(t *testing.T) {
	// Service A's NodePort number happens to equal service B's port; a flow to
	// B's ClusterIP on that port belongs to B and must be judged by B's endpoints.
	a := Target{Protocol: udp, ServiceIPs: addrs("10.96.0.1"), Port: 53, NodePort: 30053, Keep: keep("10.244.1.1:53")}
	b := Target{Protocol: udp, ServiceIPs: addrs("10.96.0.2"), Port: 30053, Keep: keep("10.244.2.2:8053")}
	m, err := newFlowMatcher(model.IPv4, []Target{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if m.MatchConntrackFlow(flow(udp, "10.0.0.1:40000", "10.96.0.2:30053", "10.244.2.2:8053")) {
		t.Error("flow to B's kept endpoint judged by A's NodePort")
	}
	if !m.MatchConntrackFlow(flow(udp, "10.0.0.1:40000", "10.96.0.2:30053", "10.244.1.1:53")) {
		t.Error("flow to A's endpoint through B's ClusterIP kept")
	}
}

func TestFlowMatcherMergesTargetsForSameDestination(t *testing.T) {
	x := Target{Protocol: udp, ServiceIPs: addrs("192.0.2.1"), Port: 53, Keep: keep("10.244.1.1:53")}
	y := Target{Protocol: udp, ServiceIPs: addrs("192.0.2.1"), Port: 53, Keep: keep("10.244.2.2:53")}
	m, err := newFlowMatcher(model.IPv4, []Target{x, y})
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range []string{"10.244.1.1:53", "10.244.2.2:53"} {
		if m.MatchConntrackFlow(flow(udp, "10.0.0.1:4000", "192.0.2.1:53", ep)) {
			t.Errorf("flow to %s, kept by one of two targets for the same IP, is stale", ep)
		}
	}
	if !m.MatchConntrackFlow(flow(udp, "10.0.0.1:4000", "192.0.2.1:53", "10.244.3.3:53")) {
		t.Error("flow kept by neither target is not stale")
	}
	if x.Keep[netip.MustParseAddrPort("10.244.2.2:53")] != (struct{}{}) || len(x.Keep) != 1 {
		t.Errorf("merging modified the caller's Keep map: %v", x.Keep)
	}
}

func TestFlowMatcherMappedAddresses(t *testing.T) {
	// IPv4-mapped IPv6 forms, in either the target or the flow, compare as IPv4.
	target := Target{Protocol: udp, ServiceIPs: addrs("::ffff:10.96.0.10"), Port: 53, Keep: keep("[::ffff:10.244.1.5]:5353")}
	m, err := newFlowMatcher(model.IPv4, []Target{target})
	if err != nil {
		t.Fatal(err)
	}
	f := flow(udp, "10.0.0.1:40000", "10.96.0.10:53", "10.244.1.5:5353")
	f.Reverse.SrcIP = f.Reverse.SrcIP.To16() // 16-byte form, as net.IP often is
	if m.MatchConntrackFlow(f) {
		t.Error("flow to a kept endpoint in mapped form is stale")
	}
	if !m.MatchConntrackFlow(flow(udp, "10.0.0.1:40000", "10.96.0.10:53", "10.244.9.9:5353")) {
		t.Error("flow to a removed endpoint is not stale")
	}
}

func TestFlowMatcherRejectsOtherProtocols(t *testing.T) {
	_, err := newFlowMatcher(model.IPv4, []Target{{Protocol: tcp, ServiceIPs: addrs("10.96.0.1"), Port: 80}})
	if err == nil {
		t.Fatal("a TCP target was accepted; deleting TCP entries would cut live connections")
	}
}

func TestFlowMatcherEmpty(t *testing.T) {
	m, err := newFlowMatcher(model.IPv4, []Target{{Protocol: udp, ServiceIPs: addrs("fd00::1"), Port: 53}})
	if err != nil {
		t.Fatal(err)
	}
	if !m.empty() {
		t.Error("matcher with only other-family addresses and no NodePort is not empty")
	}
	m, _ = newFlowMatcher(model.IPv4, []Target{{Protocol: udp, NodePort: 30000}})
	if m.empty() {
		t.Error("matcher with a NodePort is empty")
	}
}

func TestFlowMatcherUnNATedOnly(t *testing.T) {
	m, err := newFlowMatcher(model.IPv4, []Target{{Protocol: tcp, ServiceIPs: addrs("10.96.0.40"), Port: 80, UnNATedOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		flow *netlink.ConntrackFlow
		want bool
	}{
		{"SYN sent before the rules: reply from the ClusterIP itself", flow(tcp, "10.244.1.11:48502", "10.96.0.40:80", "10.96.0.40:80"), true},
		{"a DNATed connection is never touched", flow(tcp, "10.244.1.11:48504", "10.96.0.40:80", "10.244.2.11:8080"), false},
		{"another port of the address", flow(tcp, "10.244.1.11:48506", "10.96.0.40:81", "10.96.0.40:81"), false},
		{"UDP to the same address is not this target's", flow(udp, "10.244.1.11:48508", "10.96.0.40:80", "10.96.0.40:80"), false},
	} {
		if got := m.MatchConntrackFlow(c.flow); got != c.want {
			t.Errorf("%s: match = %v, want %v", c.name, got, c.want)
		}
	}
}
