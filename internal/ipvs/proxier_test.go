package ipvs

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kproxy/kproxy/internal/iptables"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
)

const nodeIP = "192.168.50.1"

func spName(name, port string, proto v1.Protocol) model.ServicePortName {
	return model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: name}, Port: port, Protocol: proto}
}

func ep(ip string, port int32, local bool) *model.Endpoint {
	return &model.Endpoint{IP: netip.MustParseAddr(ip), Port: port, Ready: true, Serving: true, IsLocal: local}
}

type snapBuilder struct{ s *model.Snapshot }

func newSnap() *snapBuilder {
	return &snapBuilder{&model.Snapshot{
		Services:  map[model.ServicePortName]*model.ServicePort{},
		Endpoints: map[model.ServicePortName][]*model.Endpoint{},
		Node:      &model.Node{Name: "node1", Addresses: []netip.Addr{netip.MustParseAddr(nodeIP)}},
	}}
}

func (b *snapBuilder) add(sp *model.ServicePort, eps ...*model.Endpoint) *snapBuilder {
	if sp.Protocol == "" {
		sp.Protocol = v1.ProtocolTCP
	}
	b.s.Services[sp.Name] = sp
	b.s.Endpoints[sp.Name] = eps
	return b
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

type rig struct {
	h       *fakeHandle
	links   *fakeLinks
	sets    *fakeIPSet
	ipt     *iptables.Fake
	metrics *metrics.Metrics
	clock   *testingclock.FakeClock
	p       *Proxier
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Family == 0 {
		cfg.Family = model.IPv4
	}
	r := &rig{h: newFakeHandle(), links: newFakeLinks(nodeIP), ipt: iptables.NewFake(cfg.Family),
		metrics: m, clock: testingclock.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))}
	r.sets = &fakeIPSet{inUse: ipsetInUse(r.ipt)}
	if cfg.MasqueradeBit == 0 {
		cfg.MasqueradeBit = 14
	}
	r.p = NewProxier(cfg, r.h, r.links, r.sets, r.ipt, r.metrics, r.clock)
	return r
}

func (r *rig) sync(t *testing.T, s *model.Snapshot, full bool) {
	t.Helper()
	if err := r.p.Sync(t.Context(), s, full); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

func TestSyncProgramsEveryServiceAddress(t *testing.T) {
	r := newRig(t, Config{})
	web := &model.ServicePort{Name: spName("web", "http", v1.ProtocolTCP), ClusterIPs: addrs("10.96.0.10"), Port: 80, NodePort: 30080,
		ExternalIPs: addrs("192.168.70.10"), LoadBalancerIPs: addrs("192.168.60.10"),
		LoadBalancerSourceRanges: []netip.Prefix{netip.MustParsePrefix("192.168.50.0/24")}, StickyMaxAgeSeconds: 300}
	dns := &model.ServicePort{Name: spName("dns", "dns", v1.ProtocolUDP), ClusterIPs: addrs("10.96.0.53", "fd00::53"), Port: 53, Protocol: v1.ProtocolUDP}
	s := newSnap().add(web, ep("10.244.1.11", 8080, true), ep("10.244.2.11", 8080, false)).
		add(dns, ep("10.244.2.12", 53, false), ep("fd00:1::1", 53, false)).s
	s.Nodes = map[model.Family]model.NodeParams{model.IPv4: {Family: model.IPv4, NodePortAll: true,
		LocalTraffic: model.LocalTraffic{CIDR: netip.MustParsePrefix("10.244.0.0/16")}}}
	r.sync(t, s, true)

	want := strings.Join([]string{
		"10.96.0.10:80/TCP rr persistent 300: 10.244.1.11:8080/1 10.244.2.11:8080/1",
		"10.96.0.53:53/UDP rr: 10.244.2.12:53/1",
		"192.168.50.1:30080/TCP rr persistent 300: 10.244.1.11:8080/1 10.244.2.11:8080/1",
		"192.168.60.10:80/TCP rr persistent 300: 10.244.1.11:8080/1 10.244.2.11:8080/1",
		"192.168.70.10:80/TCP rr persistent 300: 10.244.1.11:8080/1 10.244.2.11:8080/1",
	}, "\n")
	if got := r.h.table(); got != want {
		t.Errorf("IPVS table:\n%s\nwant:\n%s", got, want)
	}
	bound, _ := r.links.Addrs(DummyInterface, model.IPv4)
	slices.SortFunc(bound, func(a, b netip.Addr) int { return a.Compare(b) })
	if got := strings.Join(mapStr(bound), " "); got != "10.96.0.10 10.96.0.53 192.168.60.10 192.168.70.10" {
		t.Errorf("kube-ipvs0 holds %s", got)
	}
	for set, members := range map[string]string{
		"KUBE-CLUSTER-IP":                "10.96.0.10,tcp:80 10.96.0.53,udp:53",
		"KUBE-EXTERNAL-IP":               "192.168.70.10,tcp:80",
		"KUBE-LOAD-BALANCER":             "192.168.60.10,tcp:80",
		"KUBE-LOAD-BALANCER-FW":          "192.168.60.10,tcp:80",
		"KUBE-LOAD-BALANCER-SOURCE-CIDR": "192.168.60.10,tcp:80,192.168.50.0/24",
		"KUBE-LOAD-BALANCER-SOURCE-IP":   "192.168.60.10,tcp:80,192.168.60.10", // the range holds the node
		"KUBE-NODE-PORT-TCP":             "30080",
		"KUBE-NODE-PORT-LOCAL-TCP":       "",
		"KUBE-LOOP-BACK":                 "10.244.1.11,tcp:8080,10.244.1.11", // only the local endpoint
		"KUBE-IPVS-IPS":                  "10.96.0.10 10.96.0.53 192.168.60.10 192.168.70.10",
	} {
		if got := strings.Join(r.sets.sets[set], " "); got != members {
			t.Errorf("ipset %s = %q, want %q", set, got, members)
		}
	}
	if n := r.ipt.Restores(); n != 1 {
		t.Errorf("the full sync ran %d iptables restores, want 1", n)
	}
	if _, ok := r.ipt.Rules("mangle", chainCanary); !ok {
		t.Errorf("no canary chain in mangle")
	}
	if rules, _ := r.ipt.Rules("nat", chainServices); !slices.ContainsFunc(rules, func(l string) bool {
		return strings.HasPrefix(l, "-A KUBE-SERVICES ! -s 10.244.0.0/16 ") && strings.HasSuffix(l, "-j KUBE-MARK-MASQ")
	}) {
		t.Errorf("no ClusterIP masquerade rule for non-pod sources in nat KUBE-SERVICES:\n%s", strings.Join(rules, "\n"))
	}
	r.sync(t, s, true)
	// Every jump rule once, also after a second full sync.
	for _, j := range jumps {
		rules, _ := r.ipt.Rules(j.table, j.chain)
		if n := countLines(rules, strings.TrimSuffix(j.saveLine(), "\n")); n != 1 {
			t.Errorf("jump rule %s %s %v present %d times, want once", j.table, j.chain, j.args, n)
		}
	}
	if r.p.Flushed(t.Context()) {
		t.Errorf("Flushed right after a sync")
	}
	if err := r.ipt.Run("-t", "mangle", "-X", chainCanary); err != nil {
		t.Fatal(err)
	}
	r.clock.Step(flushCheckInterval - time.Millisecond)
	if r.p.Flushed(t.Context()) {
		t.Errorf("Flushed looked again within flushCheckInterval of its last check")
	}
	r.clock.Step(time.Millisecond)
	if !r.p.Flushed(t.Context()) {
		t.Errorf("Flushed is false after the canary chain was removed")
	}
}

func countLines(lines []string, want string) int {
	n := 0
	for _, l := range lines {
		if l == want {
			n++
		}
	}
	return n
}

func mapStr(as []netip.Addr) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

// An IPv6 proxier programs the IPv6 addresses into KUBE-6- sets and leaves IPv4 alone.
func TestIPv6FamilyUsesItsOwnSets(t *testing.T) {
	r := newRig(t, Config{Family: model.IPv6})
	dns := &model.ServicePort{Name: spName("dns", "dns", v1.ProtocolUDP), ClusterIPs: addrs("10.96.0.53", "fd00::53"), Port: 53, Protocol: v1.ProtocolUDP}
	r.sync(t, newSnap().add(dns, ep("10.244.2.12", 53, false), ep("fd00:1::1", 53, false)).s, true)
	if got := r.h.table(); got != "[fd00::53]:53/UDP rr: [fd00:1::1]:53/1" {
		t.Errorf("IPv6 table: %s", got)
	}
	if got := strings.Join(r.sets.sets["KUBE-6-CLUSTER-IP"], " "); got != "fd00::53,udp:53" {
		t.Errorf("KUBE-6-CLUSTER-IP = %q", got)
	}
	if _, ok := r.sets.sets["KUBE-CLUSTER-IP"]; ok {
		t.Errorf("the IPv6 proxier created IPv4 sets")
	}
}

func TestLocalPoliciesUseLocalEndpointsAndReportGaps(t *testing.T) {
	r := newRig(t, Config{})
	np := &model.ServicePort{Name: spName("np", "", v1.ProtocolTCP), ClusterIPs: addrs("10.96.0.20"), Port: 80, NodePort: 30020, ExternalPolicyLocal: true}
	itp := &model.ServicePort{Name: spName("itp", "", v1.ProtocolTCP), ClusterIPs: addrs("10.96.0.21"), Port: 80, InternalPolicyLocal: true}
	s := newSnap().add(np, ep("10.244.1.11", 80, true), ep("10.244.2.11", 80, false)).add(itp, ep("10.244.2.11", 80, false)).s
	r.sync(t, s, true)
	want := strings.Join([]string{
		"10.96.0.20:80/TCP rr: 10.244.1.11:80/1 10.244.2.11:80/1", // the ClusterIP uses every endpoint
		"10.96.0.21:80/TCP rr: ",                                  // iTP=Local, none local: no real server
		"192.168.50.1:30020/TCP rr: 10.244.1.11:80/1",             // eTP=Local: the local one only
	}, "\n")
	if got := r.h.table(); got != want {
		t.Errorf("IPVS table:\n%s\nwant:\n%s", got, want)
	}
	if got := strings.Join(r.sets.sets["KUBE-NODE-PORT-LOCAL-TCP"], " "); got != "30020" {
		t.Errorf("KUBE-NODE-PORT-LOCAL-TCP = %q, want 30020 (no masquerade for eTP=Local)", got)
	}
	gaps := r.p.lastPlan.Gaps
	if len(gaps["ns/itp"]) != 1 || !strings.Contains(gaps["ns/itp"][0], "internalTrafficPolicy Local without local endpoints") {
		t.Errorf("gaps of ns/itp: %q", gaps["ns/itp"])
	}
	if len(gaps["ns/np"]) != 1 || !strings.Contains(gaps["ns/np"][0], "no short-circuit") {
		t.Errorf("gaps of ns/np: %q", gaps["ns/np"])
	}
	if got := testutil.ToFloat64(r.metrics.NoLocalEndpointsTotal.WithLabelValues("internal", "IPv4")); got != 1 {
		t.Errorf("no-local-endpoints metric (internal): %v, want 1", got)
	}
}

// Removed TCP real servers with connections drain at weight 0 and go once idle; UDP
// ones go at once; an endpoint that comes back is restored to weight 1.
func TestGracefulRemoval(t *testing.T) {
	r := newRig(t, Config{})
	web := &model.ServicePort{Name: spName("web", "", v1.ProtocolTCP), ClusterIPs: addrs("10.96.0.10"), Port: 80}
	dns := &model.ServicePort{Name: spName("dns", "", v1.ProtocolUDP), ClusterIPs: addrs("10.96.0.53"), Port: 53, Protocol: v1.ProtocolUDP}
	a, b := ep("10.244.1.11", 80, true), ep("10.244.2.11", 80, false)
	ua, ub := ep("10.244.1.11", 53, true), ep("10.244.2.11", 53, false)
	r.sync(t, newSnap().add(web, a, b).add(dns, ua, ub).s, false)
	webKey := VSKey{netip.MustParseAddr("10.96.0.10"), v1.ProtocolTCP, 80}
	dnsKey := VSKey{netip.MustParseAddr("10.96.0.53"), v1.ProtocolUDP, 53}
	r.h.setConns(webKey, b.AddrPort(), 2, 1)
	r.h.setConns(dnsKey, ub.AddrPort(), 0, 5)

	r.sync(t, newSnap().add(web, a).add(dns, ua).s, false)
	want := "10.96.0.10:80/TCP rr: 10.244.1.11:80/1 10.244.2.11:80/0\n10.96.0.53:53/UDP rr: 10.244.1.11:53/1"
	if got := r.h.table(); got != want {
		t.Fatalf("after removing b:\n%s\nwant:\n%s", got, want)
	}
	r.p.graceful.process(klog.Background(), r.h)
	if got := r.h.table(); got != want {
		t.Fatalf("a real server with connections was deleted:\n%s", got)
	}
	r.h.setConns(webKey, b.AddrPort(), 0, 0)
	r.p.graceful.process(klog.Background(), r.h)
	if got := r.h.table(); got != "10.96.0.10:80/TCP rr: 10.244.1.11:80/1\n10.96.0.53:53/UDP rr: 10.244.1.11:53/1" {
		t.Fatalf("drained real server not deleted:\n%s", got)
	}
	if r.p.graceful.Len() != 0 {
		t.Errorf("%d real servers still queued", r.p.graceful.Len())
	}

	// Drain again, then the endpoint returns before it is idle.
	r.sync(t, newSnap().add(web, a, b).add(dns, ua).s, false)
	r.h.setConns(webKey, b.AddrPort(), 1, 0)
	r.sync(t, newSnap().add(web, a).add(dns, ua).s, false)
	r.sync(t, newSnap().add(web, a, b).add(dns, ua).s, false)
	if got := r.h.table(); !strings.Contains(got, "10.244.2.11:80/1") || r.p.graceful.Len() != 0 {
		t.Errorf("returning endpoint not restored to weight 1 (queued %d):\n%s", r.p.graceful.Len(), got)
	}
}

// The background loop deletes idle draining real servers at its ticks of the injected
// clock, and returns when its context ends.
func TestDrainLoopFollowsItsClockAndContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{})
		every := r.p.cfg.DrainInterval // the default
		web := &model.ServicePort{Name: spName("web", "", v1.ProtocolTCP), ClusterIPs: addrs("10.96.0.10"), Port: 80}
		a, b := ep("10.244.1.11", 80, true), ep("10.244.2.11", 80, false)
		webKey := VSKey{netip.MustParseAddr("10.96.0.10"), v1.ProtocolTCP, 80}
		r.sync(t, newSnap().add(web, a, b).s, true)
		r.h.setConns(webKey, b.AddrPort(), 1, 0)
		r.sync(t, newSnap().add(web, a).s, false) // b drains: it has a connection

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			r.p.RunBackground(ctx)
			close(done)
		}()
		synctest.Wait()
		r.h.setConns(webKey, b.AddrPort(), 0, 0)
		draining := "10.96.0.10:80/TCP rr: 10.244.1.11:80/1 10.244.2.11:80/0"
		r.clock.Step(every - time.Millisecond)
		synctest.Wait()
		if got := r.h.table(); got != draining {
			t.Fatalf("before the drain interval:\n%s\nwant:\n%s", got, draining)
		}
		r.clock.Step(time.Millisecond)
		synctest.Wait()
		if got := r.h.table(); got != "10.96.0.10:80/TCP rr: 10.244.1.11:80/1" {
			t.Fatalf("idle real server not deleted at the drain tick:\n%s", got)
		}
		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("RunBackground did not return after its context ended")
		}
	})
}

func TestStaleVirtualServersAndAddressesGo(t *testing.T) {
	r := newRig(t, Config{ExcludeCIDRs: []netip.Prefix{netip.MustParsePrefix("10.100.0.0/16")}})
	// Left by someone else: one in the excluded range, one not.
	for _, a := range []string{"10.100.0.1", "10.200.0.1"} {
		_ = r.h.NewService(toService(&VirtualServer{Key: VSKey{netip.MustParseAddr(a), v1.ProtocolTCP, 80}, Scheduler: "rr"}))
	}
	_ = r.links.EnsureDummy(DummyInterface)
	_ = r.links.AddAddr(DummyInterface, netip.MustParseAddr("10.96.9.9"))
	web := &model.ServicePort{Name: spName("web", "", v1.ProtocolTCP), ClusterIPs: addrs("10.96.0.10"), Port: 80}
	r.sync(t, newSnap().add(web, ep("10.244.1.11", 80, true)).s, true)
	if got := r.h.table(); got != "10.100.0.1:80/TCP rr: \n10.96.0.10:80/TCP rr: 10.244.1.11:80/1" {
		t.Errorf("table:\n%s", got)
	}
	if got, _ := r.links.Addrs(DummyInterface, model.IPv4); len(got) != 1 || got[0].String() != "10.96.0.10" {
		t.Errorf("kube-ipvs0 holds %v, want only 10.96.0.10", got)
	}
	// The Service goes: its virtual server and address go with it.
	r.sync(t, newSnap().s, false)
	if got := r.h.table(); got != "10.100.0.1:80/TCP rr: " {
		t.Errorf("after deleting the Service:\n%s", got)
	}
	if got, _ := r.links.Addrs(DummyInterface, model.IPv4); len(got) != 0 {
		t.Errorf("kube-ipvs0 still holds %v", got)
	}
}

// A change to one endpoint rewrites only the sets it touches.
func TestOnlyChangedSetsAreRewritten(t *testing.T) {
	r := newRig(t, Config{})
	web := &model.ServicePort{Name: spName("web", "", v1.ProtocolTCP), ClusterIPs: addrs("10.96.0.10"), Port: 80}
	r.sync(t, newSnap().add(web, ep("10.244.2.11", 80, false)).s, true)
	first := r.sets.restores
	r.sync(t, newSnap().add(web, ep("10.244.2.11", 80, false)).s, false)
	if r.sets.restores != first {
		t.Errorf("an unchanged snapshot rewrote ipsets")
	}
	r.sync(t, newSnap().add(web, ep("10.244.1.11", 80, true)).s, false)
	if got := strings.Join(r.sets.sets["KUBE-LOOP-BACK"], " "); got != "10.244.1.11,tcp:80,10.244.1.11" {
		t.Errorf("KUBE-LOOP-BACK = %q", got)
	}
	in := string(SetsRestore(model.IPv4, r.p.lastSets, map[string]bool{"KUBE-LOOP-BACK": true}))
	if strings.Count(in, "swap ") != 1 || !strings.Contains(in, "create KUBE-CLUSTER-IP hash:ip,port family inet") {
		t.Errorf("restore input for one changed set:\n%s", in)
	}
	if n := r.ipt.Restores(); n != 1 {
		t.Errorf("the fixed iptables rules were rewritten %d times for endpoint changes", n)
	}
}

func TestSetupChecksSchedulerAndSetsSysctls(t *testing.T) {
	r := newRig(t, Config{Scheduler: "lc", StrictARP: true})
	r.h.schedulers = map[string]bool{"rr": true}
	got := map[string]string{}
	w := func(p, v string) error { got[p] = v; return nil }
	if err := r.p.Setup(w); err == nil || !strings.Contains(err.Error(), `scheduler "lc"`) {
		t.Errorf("Setup with an unknown scheduler: %v", err)
	}
	for p, v := range map[string]string{"net/ipv4/vs/conntrack": "1", "net/ipv4/vs/expire_nodest_conn": "1",
		"net/ipv4/vs/expire_quiescent_template": "1", "net/ipv4/ip_forward": "1",
		"net/ipv4/conf/all/arp_ignore": "1", "net/ipv4/conf/all/arp_announce": "2"} {
		if got[p] != v {
			t.Errorf("sysctl %s = %q, want %q", p, got[p], v)
		}
	}
	r.h.schedulers["lc"] = true
	if err := r.p.Setup(w); err != nil {
		t.Errorf("Setup with a known scheduler: %v", err)
	}
	if len(r.h.services) != 0 {
		t.Errorf("the scheduler probe left a virtual server: %s", r.h.table())
	}
}

func TestCleanupRemovesEverything(t *testing.T) {
	r := newRig(t, Config{})
	web := &model.ServicePort{Name: spName("web", "", v1.ProtocolTCP), ClusterIPs: addrs("10.96.0.10"), Port: 80, NodePort: 30080}
	r.sync(t, newSnap().add(web, ep("10.244.1.11", 80, true)).s, true)
	if !HasLeftovers(r.links, r.sets) {
		t.Fatalf("no leftovers seen after a sync")
	}
	if err := Cleanup(model.IPv4, r.ipt, r.sets, r.h, r.links, CleanupOptions{AllServices: true}); err != nil {
		t.Fatal(err)
	}
	if err := DeleteDummy(r.links); err != nil {
		t.Fatal(err)
	}
	if got := r.h.table(); got != "" {
		t.Errorf("virtual servers remain:\n%s", got)
	}
	if names, _ := r.sets.Names(); len(names) != 0 {
		t.Errorf("ipsets remain: %v", names)
	}
	for _, j := range jumps {
		if rules, _ := r.ipt.Rules(j.table, j.chain); len(rules) != 0 {
			t.Errorf("rules remain in %s %s: %v", j.table, j.chain, rules)
		}
	}
	for _, table := range []string{"filter", "nat"} {
		for c := range ipvsOnlyChains {
			if _, ok := r.ipt.Rules(table, c); ok {
				t.Errorf("chain %s %s remains", table, c)
			}
		}
	}
	if HasLeftovers(r.links, r.sets) {
		t.Errorf("leftovers after Cleanup")
	}
}
