package allocator

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/model"
)

func mustOpen(t *testing.T, dir string, ports PortRange, cidrs ...string) *Allocator {
	t.Helper()
	var ps []netip.Prefix
	for _, c := range cidrs {
		ps = append(ps, netip.MustParsePrefix(c))
	}
	a, err := Open(dir, ps, ports)
	if err != nil {
		t.Fatalf("Open(%q, %v): %v", dir, cidrs, err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func TestSmallRangeSkipsNetworkAndBroadcastAndExhausts(t *testing.T) {
	a := mustOpen(t, "", DefaultNodePortRange, "10.0.0.0/30", "fd00::/126")
	var v4, v6 []string
	for i := range 2 {
		ip, err := a.AllocateIP(fmt.Sprintf("ns/v4-%d", i), model.IPv4)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		v4 = append(v4, ip.String())
	}
	for i := range 3 {
		ip, err := a.AllocateIP(fmt.Sprintf("ns/v6-%d", i), model.IPv6)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		v6 = append(v6, ip.String())
	}
	slices.Sort(v4)
	slices.Sort(v6)
	if want := []string{"10.0.0.1", "10.0.0.2"}; !slices.Equal(v4, want) {
		t.Errorf("IPv4 /30 gave %v, want %v (no network or broadcast address)", v4, want)
	}
	if want := []string{"fd00::1", "fd00::2", "fd00::3"}; !slices.Equal(v6, want) {
		t.Errorf("IPv6 /126 gave %v, want %v (no network address, last one usable)", v6, want)
	}
	_, err := a.AllocateIP("ns/extra", model.IPv4)
	var ex *ExhaustedError
	if !errors.As(err, &ex) || !strings.Contains(err.Error(), "10.0.0.0/30") {
		t.Errorf("allocating from a full range: got %v, want an ExhaustedError naming the range", err)
	}
	if _, ok := a.IPHolder(netip.MustParseAddr("10.0.0.3")); ok {
		t.Errorf("the broadcast address was handed out")
	}
}

func TestAllocateSpecificErrors(t *testing.T) {
	a := mustOpen(t, "", DefaultNodePortRange, "10.96.0.0/12")
	if err := a.AllocateSpecificIP("default/api", netip.MustParseAddr("10.96.0.10")); err != nil {
		t.Fatal(err)
	}
	// The holder asking again is fine.
	if err := a.AllocateSpecificIP("default/api", netip.MustParseAddr("10.96.0.10")); err != nil {
		t.Errorf("re-claiming one's own IP: %v", err)
	}
	err := a.AllocateSpecificIP("default/web", netip.MustParseAddr("10.96.0.10"))
	if err == nil || err.Error() != "10.96.0.10 is held by default/api" {
		t.Errorf("collision: got %v", err)
	}
	var held *HeldError
	if !errors.As(err, &held) || held.Holder != "default/api" || ErrorKey(err) != "IPv4" {
		t.Errorf("collision error %#v lacks the holder or key", err)
	}
	err = a.AllocateSpecificIP("default/web", netip.MustParseAddr("10.0.0.5"))
	if err == nil || err.Error() != "10.0.0.5 is outside the service-cluster-ip-range 10.96.0.0/12" {
		t.Errorf("outside: got %v", err)
	}
	if err := a.AllocateSpecificIP("default/web", netip.MustParseAddr("10.96.0.0")); err == nil {
		t.Errorf("the network address was accepted")
	}
	if err := a.AllocateSpecificIP("default/web", netip.MustParseAddr("10.111.255.255")); err == nil {
		t.Errorf("the broadcast address was accepted")
	}
	if err := a.AllocateSpecificIP("default/web", netip.MustParseAddr("fd00::1")); err == nil || !strings.Contains(err.Error(), "no IPv6") {
		t.Errorf("an IPv6 address without an IPv6 range: got %v", err)
	}
	if owners := a.Owners(); !slices.Equal(owners, []string{"default/api"}) {
		t.Errorf("failed claims left holdings behind: owners %v", owners)
	}
}

func TestReleaseAndReuse(t *testing.T) {
	a := mustOpen(t, "", PortRange{Base: 30000, Size: 2}, "10.0.0.0/30")
	ipA, _ := a.AllocateIP("ns/a", model.IPv4)
	portA, _ := a.AllocateNodePort("ns/a", "TCP/80")
	if _, err := a.AllocateIP("ns/b", model.IPv4); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AllocateNodePort("ns/b", "TCP/80"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AllocateIP("ns/c", model.IPv4); err == nil {
		t.Fatalf("a full range gave ns/c an address")
	}
	if _, err := a.AllocateNodePort("ns/c", "TCP/80"); err == nil {
		t.Fatalf("a full port range gave ns/c a port")
	}
	if err := a.Release("ns/a"); err != nil {
		t.Fatal(err)
	}
	if ip, err := a.AllocateIP("ns/c", model.IPv4); err != nil || ip != ipA {
		t.Errorf("after release: got %v, %v; want ns/a's old %v", ip, err, ipA)
	}
	if p, err := a.AllocateNodePort("ns/c", "TCP/80"); err != nil || p != portA {
		t.Errorf("after release: got port %d, %v; want ns/a's old %d", p, err, portA)
	}
	if h, ok := a.IPHolder(ipA); !ok || h != "ns/c" {
		t.Errorf("holder of %v is %q, want ns/c", ipA, h)
	}
}

func TestDynamicAllocationIsStable(t *testing.T) {
	a := mustOpen(t, "", DefaultNodePortRange, "10.96.0.0/12", "fd00:10:96::/112")
	v4, _ := a.AllocateIP("ns/a", model.IPv4)
	v6, _ := a.AllocateIP("ns/a", model.IPv6)
	if model.FamilyOf(v4) != model.IPv4 || model.FamilyOf(v6) != model.IPv6 {
		t.Fatalf("got %v and %v", v4, v6)
	}
	again, _ := a.AllocateIP("ns/a", model.IPv4)
	if again != v4 {
		t.Errorf("asking twice gave %v then %v", v4, again)
	}
	out, err := a.Assign("ns/a", Request{IPs: []IPRequest{{Family: model.IPv6}, {Family: model.IPv4}}})
	if err != nil || !slices.Equal(out.IPs, []netip.Addr{v6, v4}) {
		t.Errorf("Assign gave %v, %v; want the held %v %v in request order", out.IPs, err, v6, v4)
	}
	// Dropping a family releases it.
	if _, err := a.Assign("ns/a", Request{IPs: []IPRequest{{Family: model.IPv4}}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.IPHolder(v6); ok {
		t.Errorf("%v still held after single-stack Assign", v6)
	}
}

func TestNodePorts(t *testing.T) {
	a := mustOpen(t, "", PortRange{Base: 30000, Size: 100}, "10.96.0.0/24")
	if err := a.AllocateSpecificNodePort("default/api", "TCP/80", 30080); err != nil {
		t.Fatal(err)
	}
	err := a.AllocateSpecificNodePort("default/web", "TCP/80", 30080)
	if err == nil || err.Error() != "nodePort 30080 is held by default/api" {
		t.Errorf("collision: got %v", err)
	}
	err = a.AllocateSpecificNodePort("default/web", "TCP/80", 80)
	if err == nil || err.Error() != "nodePort 80 is outside the node port range 30000-30099" {
		t.Errorf("outside: got %v", err)
	}
	// TCP and UDP 53 of one Service share a nodePort; other ports get their own.
	out, err := a.Assign("kube-system/dns", Request{Ports: []PortRequest{
		{Key: "TCP/53", Share: "53"}, {Key: "UDP/53", Share: "53"}, {Key: "TCP/9153", Share: "9153"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if out.Ports["TCP/53"] != out.Ports["UDP/53"] || out.Ports["TCP/53"] == out.Ports["TCP/9153"] {
		t.Errorf("ports %v: want TCP/53 and UDP/53 shared, TCP/9153 separate", out.Ports)
	}
	if out.Ports["TCP/53"] == 30080 || out.Ports["TCP/9153"] == 30080 {
		t.Errorf("ports %v reuse default/api's 30080", out.Ports)
	}
	// A kept port that another key now asks for explicitly moves.
	kept := out.Ports["TCP/9153"]
	out2, err := a.Assign("kube-system/dns", Request{Ports: []PortRequest{
		{Key: "TCP/53", Port: kept, Share: "53"}, {Key: "TCP/9153", Share: "9153"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if out2.Ports["TCP/53"] != kept || out2.Ports["TCP/9153"] == kept {
		t.Errorf("ports %v: TCP/9153 should have moved off %d", out2.Ports, kept)
	}
	// Only the ports the last request holds stay held.
	for _, p := range out.Ports {
		h, held := a.NodePortHolder(p)
		stillWanted := slices.Contains(slices.Collect(maps.Values(out2.Ports)), p)
		if held != stillWanted || (held && h != "kube-system/dns") {
			t.Errorf("port %d: held=%v by %q, still requested=%v", p, held, h, stillWanted)
		}
	}
}

func TestAssignIsAtomic(t *testing.T) {
	a := mustOpen(t, "", PortRange{Base: 30000, Size: 100}, "10.96.0.0/24")
	if _, err := a.Assign("ns/a", Request{Ports: []PortRequest{{Key: "TCP/80", Port: 30001}}}); err != nil {
		t.Fatal(err)
	}
	before, err := a.Assign("ns/b", Request{IPs: []IPRequest{{Family: model.IPv4}}, Ports: []PortRequest{{Key: "TCP/80"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Assign("ns/b", Request{
		IPs:   []IPRequest{{IP: netip.MustParseAddr("10.96.0.77")}},
		Ports: []PortRequest{{Key: "TCP/80", Port: 30001}},
	})
	if err == nil || ErrorKey(err) != "TCP/80" {
		t.Fatalf("got %v, want a collision on TCP/80", err)
	}
	ips, ports := a.Holding("ns/b")
	if !slices.Equal(ips, before.IPs) || ports["TCP/80"] != before.Ports["TCP/80"] {
		t.Errorf("failed Assign changed ns/b's holding to %v %v, want %v %v", ips, ports, before.IPs, before.Ports)
	}
	if _, ok := a.IPHolder(netip.MustParseAddr("10.96.0.77")); ok {
		t.Errorf("failed Assign kept 10.96.0.77")
	}
}

func TestBadRanges(t *testing.T) {
	for _, tc := range []struct {
		cidrs []string
		ports PortRange
	}{
		{[]string{"10.0.0.0/31"}, DefaultNodePortRange},
		{[]string{"10.0.0.0/8", "10.96.0.0/12"}, DefaultNodePortRange},
		{[]string{"fd00::/48"}, DefaultNodePortRange},
		{[]string{"10.0.0.0/24"}, PortRange{Base: 65000, Size: 1000}},
		{[]string{"10.0.0.0/24"}, PortRange{Base: 30000, Size: 0}},
	} {
		var ps []netip.Prefix
		for _, c := range tc.cidrs {
			ps = append(ps, netip.MustParsePrefix(c))
		}
		if _, err := Open("", ps, tc.ports); err == nil {
			t.Errorf("Open(%v, %v) accepted a bad configuration", tc.cidrs, tc.ports)
		}
	}
}

func TestLargeRangeAllocationIsFast(t *testing.T) {
	a := mustOpen(t, "", DefaultNodePortRange, "10.96.0.0/12", "fd00::/64")
	seen := map[netip.Addr]bool{}
	err := a.Update(func(tx *Txn) {
		for i := range 20000 {
			out, err := tx.Assign(fmt.Sprintf("ns/s%d", i), Request{IPs: []IPRequest{{Family: model.IPv4}, {Family: model.IPv6}}})
			if err != nil {
				t.Fatal(err)
			}
			for _, ip := range out.IPs {
				if seen[ip] {
					t.Fatalf("%v handed out twice", ip)
				}
				seen[ip] = true
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}
