package nftables

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	v1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kproxy/kproxy/internal/model"
)

// enterTestNetns runs the rest of the test on this OS thread inside a new network
// namespace: knftables execs nft from the calling thread, so nft (and sockets the test
// opens) live in the namespace. Everything is undone in t.Cleanup.
func enterTestNetns(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skipf("skipping kernel test: nft not installed: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping kernel test: needs root for network namespaces")
	}
	name := fmt.Sprintf("kproxy-nft-%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })

	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(ns); err != nil {
		t.Fatalf("entering netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		// If the thread cannot go back, leave it locked: Go then discards it.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		_ = orig.Close()
		_ = ns.Close()
	})
	run(t, "ip", "link", "set", "lo", "up")
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func listTable(t *testing.T, family string) string {
	t.Helper()
	return run(t, "nft", "list", "table", family, TableName)
}

func wantIn(t *testing.T, what, text string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(text, s) {
			t.Errorf("%s lacks %q:\n%s", what, s, text)
		}
	}
}

func wantNotIn(t *testing.T, what, text string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if strings.Contains(text, s) {
			t.Errorf("%s still holds %q:\n%s", what, s, text)
		}
	}
}

func dialResult(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
	if err != nil {
		if strings.Contains(err.Error(), "refused") {
			return "refused"
		}
		if strings.Contains(err.Error(), "timeout") {
			return "timeout"
		}
		return err.Error()
	}
	_ = c.Close()
	return "connected"
}

// loopbackEndpoints puts the endpoint addresses 10.180.0.1 and 10.180.0.2 on loopback,
// with a route for the ServiceCIDR, so that connections from this namespace to
// ClusterIPs go through the rules (output DNAT reroutes them to the local endpoint),
// and accepts TCP connections on listen until the test ends.
func loopbackEndpoints(t *testing.T, listen string) {
	t.Helper()
	run(t, "ip", "addr", "add", "10.180.0.1/32", "dev", "lo")
	run(t, "ip", "addr", "add", "10.180.0.2/32", "dev", "lo")
	run(t, "ip", "route", "add", "172.30.0.0/16", "dev", "lo")
	ln, err := net.Listen("tcp4", listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
}

func TestKernelSmoke(t *testing.T) {
	enterTestNetns(t)
	loopbackEndpoints(t, "0.0.0.0:80")

	nft, err := New(model.IPv4)
	if err != nil {
		t.Fatalf("knftables: %v", err)
	}
	clock := testingclock.NewFakePassiveClock(time.Now())
	p := NewProxier(referenceParams(), nft, clock, newMetrics())
	w := referenceWorld()
	lb := webPort()
	lb.NodePort = 30080
	lb.LoadBalancerIPs = addrs("1.2.3.4")
	lb.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	w.set(lb, ep("10.180.0.2", 80, "test-node"))
	if err := p.Sync(t.Context(), w.snapshot(), true); err != nil {
		t.Fatalf("full sync: %v", err)
	}
	table := listTable(t, "ip")
	wantIn(t, "table after full sync", table,
		`comment "rules for kproxy"`,
		"172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80",
		"tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80",
		"tcp . 30080 : goto external-Y6QD5CCT-ns/web/tcp/http",
		"1.2.3.4 . tcp . 80 : goto firewall-Y6QD5CCT-ns/web/tcp/http",
		"set affinity-VMM5FPNP-ns3/svc3/tcp/p80__10.180.0.5/80",
		"dnat ip to numgen random mod 65536 map @service-ULMVA6XW-ns1/svc1/tcp/p80",
		"0-32767 : 10.180.0.1 . 80", "32768-65535 : 10.180.0.2 . 80",
		"10.180.0.3 . 10.180.0.3 . tcp . 8080",
	)
	if p.Flushed(t.Context()) {
		t.Error("Flushed right after a sync")
	}
	// Traffic: svc1's ClusterIP reaches an endpoint; another port of it is rejected; an
	// unallocated ClusterIP is dropped.
	if got := dialResult("172.30.0.41:80"); got != "connected" {
		t.Errorf("ClusterIP 172.30.0.41:80: %s", got)
	}
	// (The REJECT's ICMP error does not come back over this loopback route, so both
	// only show as "not connected" here; the rule shapes are tested on the fake.)
	if got := dialResult("172.30.0.41:81"); got == "connected" {
		t.Errorf("unknown port of a ClusterIP connected; want it rejected")
	}
	if got := dialResult("172.30.0.99:80"); got == "connected" {
		t.Errorf("unallocated ClusterIP connected; want it dropped")
	}

	// Partial sync: svc1 loses an endpoint, svc3 is deleted.
	w.setAll(svc1(ep("10.180.0.1", 80, "node2")))
	w.remove(spn("ns3", "svc3", "p80"))
	if err := p.Sync(t.Context(), w.snapshot(), false); err != nil {
		t.Fatalf("partial sync: %v", err)
	}
	table = listTable(t, "ip")
	wantIn(t, "table after partial sync", table, "0-65535 : 10.180.0.1 . 80", "chain service-4AT6LBPK-ns3/svc3/tcp/p80")
	wantNotIn(t, "table after partial sync", table, "affinity-", "172.30.0.43", "32768-65535 : 10.180.0.2 . 80")
	clock.SetTime(clock.Now().Add(2 * time.Second))
	if err := p.Sync(t.Context(), w.snapshot(), false); err != nil {
		t.Fatalf("partial sync: %v", err)
	}
	wantNotIn(t, "table after delayed delete", listTable(t, "ip"), "svc3")

	// A periodic full sync keeps affinity clients; a flushed ruleset is noticed and rebuilt.
	w.set(referenceWorld().ports[spn("ns3", "svc3", "p80")], ep("10.180.0.4", 80, "node2"))
	if err := p.Sync(t.Context(), w.snapshot(), false); err != nil {
		t.Fatalf("partial sync: %v", err)
	}
	run(t, "nft", "add", "element", "ip", TableName, "affinity-A6C6ULNT-ns3/svc3/tcp/p80__10.180.0.4/80", "{ 10.0.0.7 }")
	if err := p.Sync(t.Context(), w.snapshot(), true); err != nil {
		t.Fatalf("periodic full sync: %v", err)
	}
	wantIn(t, "affinity set after full sync", listTable(t, "ip"), "10.0.0.7")
	run(t, "nft", "flush", "ruleset")
	if !p.Flushed(t.Context()) {
		t.Error("Flushed missed nft flush ruleset")
	}
	if err := p.Sync(t.Context(), w.snapshot(), true); err != nil {
		t.Fatalf("full sync after flush: %v", err)
	}
	wantIn(t, "rebuilt table", listTable(t, "ip"), "172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80")
	if got := dialResult("172.30.0.41:80"); got != "connected" {
		t.Errorf("ClusterIP after rebuild: %s", got)
	}

	// IPv6: the family's rule shapes are accepted by the kernel.
	nft6, err := New(model.IPv6)
	if err != nil {
		t.Fatal(err)
	}
	p6 := NewProxier(Params{Family: model.IPv6, MasqueradeBit: 14, LocalDetector: DetectByCIDR(netip.MustParsePrefix("fd00:10::/64")),
		NodePortAll: true, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:30::/112")}}, nft6, clock, newMetrics())
	w6 := newWorld()
	v6 := &model.ServicePort{Name: spn("ns", "v6", "http"), ClusterIPs: addrs("fd00:30::10"), Port: 80, Protocol: v1.ProtocolTCP,
		NodePort: 30081, ExternalPolicyLocal: true}
	w6.set(v6, ep("fd00:10::1", 80, "node2"), ep("fd00:10::2", 80, "test-node"))
	sticky := &model.ServicePort{Name: spn("ns", "sticky", "dns"), ClusterIPs: addrs("fd00:30::11"), Port: 53, Protocol: v1.ProtocolUDP, StickyMaxAgeSeconds: 60}
	sticky.Name.Protocol = v1.ProtocolUDP
	w6.set(sticky, ep("fd00:10::3", 53, "node2"))
	if err := p6.Sync(t.Context(), w6.snapshot(), true); err != nil {
		t.Fatalf("IPv6 full sync: %v", err)
	}
	wantIn(t, "ip6 table", listTable(t, "ip6"), "fd00:30::10 . tcp . 80", "0-65535 : fd00:10::2 . 80", "timeout 1m")

	for _, n := range []interface {
		Sync(context.Context, *model.Snapshot, bool) error
	}{p, p6} {
		_ = n
	}
	if err := Cleanup(nft); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(nft6); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(nft6); err != nil {
		t.Fatalf("second Cleanup: %v", err)
	}
	wantNotIn(t, "tables after Cleanup", run(t, "nft", "list", "tables"), TableName)
}

// TestElementUpdatesOverNetlink: endpoint changes are written over netlink; packets
// follow them at once, and nft reads the result back exactly as it reads what its own
// full sync writes.
func TestElementUpdatesOverNetlink(t *testing.T) {
	enterTestNetns(t)
	loopbackEndpoints(t, "10.180.0.2:80") // only 10.180.0.2 answers on port 80
	nft, err := New(model.IPv4)
	if err != nil {
		t.Fatalf("knftables: %v", err)
	}
	p := NewProxier(referenceParams(), nft, clock.RealClock{}, newMetrics())
	w := referenceWorld()
	w.setAll(svc1(ep("10.180.0.1", 80, "node2")))
	// A UDP Service shares the dispatch's shape (nft must accept its map with "meta
	// l4proto udp"), and an IPv4 UDP endpoint map.
	dns := &model.ServicePort{Name: spn("ns", "dns", "dns"), ClusterIPs: addrs("172.30.0.53"), Port: 53, Protocol: v1.ProtocolUDP}
	dns.Name.Protocol = v1.ProtocolUDP
	w.set(dns, ep("10.180.0.1", 53, "node2"), ep("10.180.0.2", 53, "node2"))
	wr, err := p.write(t.Context(), w.snapshot(), true)
	if err != nil {
		t.Fatalf("full sync: %v", err)
	}
	// The table was new: its elements went over netlink after nft built the rest.
	if wr.via != "nft+netlink" {
		t.Errorf("first sync into an empty table written via %q, want nft+netlink", wr.via)
	}
	first := listTable(t, "ip")
	wantIn(t, "table with a UDP Service", first, "meta l4proto udp dnat ip to numgen random mod 65536 map @service-", "32768-65535 : 10.180.0.2 . 53")
	wr, err = p.write(t.Context(), w.snapshot(), true)
	if err != nil {
		t.Fatalf("second full sync: %v", err)
	}
	if wr.via != "nft" {
		t.Errorf("full sync over a table with rules written via %q, want nft (one atomic transaction)", wr.via)
	}
	if byNft := listTable(t, "ip"); byNft != first {
		t.Errorf("the first sync's table:\n%s\ndiffers from nft's full sync:\n%s", first, byNft)
	}
	if got := dialResult("172.30.0.41:80"); got == "connected" {
		t.Fatalf("ClusterIP connected with only a silent endpoint")
	}
	steps := []struct {
		name string
		eps  []*model.Endpoint
		want string // dial result
	}{
		{"replaced by the answering endpoint", []*model.Endpoint{ep("10.180.0.2", 80, "test-node")}, "connected"},
		{"the answering endpoint on another port", []*model.Endpoint{ep("10.180.0.2", 81, "test-node")}, "refused"},
		{"three endpoints, all answering", []*model.Endpoint{ep("10.180.0.2", 80, "test-node"), ep("10.180.0.2", 80, "node2"), ep("10.180.0.2", 80, "node3")}, "connected"},
		// Thousands of elements in one batch: more than one netlink message, and more
		// than the default socket buffer holds.
		{"8000 endpoints", manyEndpoints(8000), ""},
		{"back to the answering endpoint", []*model.Endpoint{ep("10.180.0.2", 80, "test-node")}, "connected"},
	}
	for _, s := range steps {
		w.setAll(svc1(s.eps...))
		wr, err := p.write(t.Context(), w.snapshot(), false)
		if err != nil {
			t.Fatalf("%s: partial sync: %v", s.name, err)
		}
		if wr.via != "netlink" {
			t.Errorf("%s: written via %q, want netlink", s.name, wr.via)
		}
		for i := 0; i < 5 && s.want != ""; i++ {
			if got := dialResult("172.30.0.41:80"); got != s.want {
				t.Errorf("%s: ClusterIP dial %d: %s, want %s", s.name, i, got, s.want)
			}
		}
		written := listTable(t, "ip")
		// A full sync flushes every map and re-adds its elements through nft.
		wr, err = p.write(t.Context(), w.snapshot(), true)
		if err != nil {
			t.Fatalf("%s: full sync: %v", s.name, err)
		}
		if wr.via != "nft" {
			t.Errorf("%s: full sync written via %q, want nft", s.name, wr.via)
		}
		if byNft := listTable(t, "ip"); byNft != written {
			t.Errorf("%s: the table written over netlink:\n%s\ndiffers from nft's full sync:\n%s", s.name, written, byNft)
		}
	}
}

func manyEndpoints(n int) []*model.Endpoint {
	eps := make([]*model.Endpoint, n)
	for i := range eps {
		eps[i] = ep(fmt.Sprintf("10.181.%d.%d", i/250, i%250+1), 80, "node2")
	}
	return eps
}

// TestFirstSyncOfManyServicesOverNetlink: the first sync into an empty table writes
// thousands of verdict elements over netlink (more than one message's attribute can
// hold, in more than one batch of apartChunk operations), and nft reads them back
// exactly as it reads its own full sync.
func TestFirstSyncOfManyServicesOverNetlink(t *testing.T) {
	enterTestNetns(t)
	nft, err := New(model.IPv4)
	if err != nil {
		t.Fatalf("knftables: %v", err)
	}
	p := NewProxier(referenceParams(), nft, clock.RealClock{}, newMetrics())
	w := twoEndpointServices(3000, "a-namespace-of-some-length", "a-service-name-", true) // 15,000 element operations
	wr, err := p.write(t.Context(), w.snapshot(), true)
	if err != nil {
		t.Fatalf("first sync: %v", err)
	}
	if wr.via != "nft+netlink" {
		t.Fatalf("first sync via %q, want nft+netlink", wr.via)
	}
	first := listTable(t, "ip")
	if err := p.Sync(t.Context(), w.snapshot(), true); err != nil {
		t.Fatalf("second full sync: %v", err)
	}
	if byNft := listTable(t, "ip"); byNft != first {
		t.Errorf("the table written over netlink differs from nft's full sync (%d vs %d bytes)", len(first), len(byNft))
	}
	wantIn(t, "table", first, "172.30.5.250 . tcp . 80 : goto service-", "tcp . 31499 : goto external-",
		"172.30.11.250 . tcp . 80 : goto service-", "tcp . 32999 : goto external-")
}

// RuleCounts over netlink agrees with nft's own listing, chain by chain, and a
// missing table has no chains.
func TestRuleCountsOverNetlink(t *testing.T) {
	enterTestNetns(t)
	if counts, err := ruleCountsNetlink(model.IPv4); err != nil || len(counts) != 0 {
		t.Fatalf("without the table: %v, %v; want no chains", counts, err)
	}
	run(t, "nft", "add table ip "+TableName)
	run(t, "nft", "add chain ip "+TableName+" empty")
	run(t, "nft", "add chain ip "+TableName+" two")
	run(t, "nft", "add rule ip "+TableName+" two ip saddr 192.0.2.1 return")
	run(t, "nft", "add rule ip "+TableName+" two ip saddr 192.0.2.2 return")
	run(t, "nft", "add chain ip "+TableName+" service-X-ns/a/tcp/p")
	run(t, "nft", "add rule ip "+TableName+" service-X-ns/a/tcp/p counter")
	// Another table's rules are not counted.
	run(t, "nft", "add table ip other")
	run(t, "nft", "add chain ip other two")
	run(t, "nft", "add rule ip other two counter")
	counts, err := ruleCountsNetlink(model.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"two": 2, "service-X-ns/a/tcp/p": 1}
	for c, n := range want {
		if counts[c] != n {
			t.Errorf("chain %s: %d rules, want %d (all counts %v)", c, counts[c], n, counts)
		}
	}
	if len(counts) != len(want) {
		t.Errorf("counts %v, want exactly %v", counts, want)
	}
	if counts6, err := ruleCountsNetlink(model.IPv6); err != nil || len(counts6) != 0 {
		t.Errorf("IPv6 table (absent): %v, %v", counts6, err)
	}
}

// TestRestartRebuildsInPlaceWithNft: a new Proxier (a restarted kproxy) on a table
// that serves traffic rebuilds it in place through the real nft, which cannot add a
// rule looking up a typeof map the kernel already holds: the endpoint maps are
// recreated in the transaction. The table ends as the previous process left it.
func TestRestartRebuildsInPlaceWithNft(t *testing.T) {
	enterTestNetns(t)
	w := referenceWorld()
	startAndSync(t, w, "first start")
	before := listTable(t, "ip")
	p := startAndSync(t, w, "restart")
	if p.inPlaceFailed {
		t.Error("the rebuild in place failed")
	}
	if after := listTable(t, "ip"); after != before {
		t.Errorf("the table after the restart differs:\n%s\nbefore:\n%s", after, before)
	}
}

// TestStartOnUpstreamTable: kproxy started where upstream kube-proxy left its table
// (same name, on purpose) takes it over in place, and ends with the objects a start
// on a clean node makes, nothing of upstream's left (its chains go a sync later).
// Only the table's comment stays upstream's (nft keeps an existing table's comment),
// and nft lists the objects in creation order, so the listings are compared sorted.
func TestStartOnUpstreamTable(t *testing.T) {
	enterTestNetns(t)
	w := referenceWorld()
	startAndSync(t, w, "clean start")
	clean := listTable(t, "ip")
	run(t, "nft", "delete", "table", "ip", TableName)
	run(t, "nft", "-f", "../trace/testdata/nft-reference.nft")
	p := startAndSync(t, w, "start on upstream's table")
	if p.inPlaceFailed {
		t.Error("taking over upstream's table in place failed")
	}
	time.Sleep(2 * chainDeleteDelay)
	if err := p.Sync(t.Context(), w.snapshot(), false); err != nil {
		t.Fatalf("sync after the takeover: %v", err)
	}
	tableLines := func(listing string) []string {
		var out []string
		for _, l := range strings.Split(listing, "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, `comment "rules for kube`) && !strings.HasPrefix(l, `comment "rules for kproxy"`) {
				out = append(out, l)
			}
		}
		return out
	}
	sameLines(t, "table after taking over upstream's vs after a clean start", tableLines(listTable(t, "ip")), tableLines(clean))
}

// startAndSync is a starting kproxy: a new Proxier on the kernel's table, and its first
// (full) sync of w.
func startAndSync(t *testing.T, w *world, what string) *Proxier {
	t.Helper()
	nft, err := New(model.IPv4)
	if err != nil {
		t.Fatalf("knftables: %v", err)
	}
	p := NewProxier(referenceParams(), nft, clock.RealClock{}, newMetrics())
	if err := p.Sync(t.Context(), w.snapshot(), true); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return p
}
