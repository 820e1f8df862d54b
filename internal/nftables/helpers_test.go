package nftables

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/knftables"

	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
)

func spn(ns, name, port string) model.ServicePortName {
	return model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}, Port: port, Protocol: v1.ProtocolTCP}
}

func ep(ip string, port int32, node string) *model.Endpoint {
	return &model.Endpoint{IP: netip.MustParseAddr(ip), Port: port, NodeName: node, IsLocal: node == "test-node", Ready: true, Serving: true}
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// world is a mutable cluster state that yields snapshots the way the Tracker does:
// each snapshot carries the Services changed since the previous one.
type world struct {
	ports   map[model.ServicePortName]*model.ServicePort
	eps     map[model.ServicePortName][]*model.Endpoint
	changed map[types.NamespacedName]struct{}
	node    *model.Node
}

func newWorld() *world {
	return &world{
		ports:   map[model.ServicePortName]*model.ServicePort{},
		eps:     map[model.ServicePortName][]*model.Endpoint{},
		changed: map[types.NamespacedName]struct{}{},
		node:    &model.Node{Name: "test-node", Addresses: addrs("192.168.0.2")},
	}
}

func (w *world) set(sp *model.ServicePort, eps ...*model.Endpoint) {
	w.ports[sp.Name] = sp
	w.eps[sp.Name] = model.MergeEndpoints(eps)
	w.changed[sp.Name.NamespacedName] = struct{}{}
}

func (w *world) setAll(sp *model.ServicePort, eps []*model.Endpoint) { w.set(sp, eps...) }

func (w *world) remove(name model.ServicePortName) {
	delete(w.ports, name)
	delete(w.eps, name)
	w.changed[name.NamespacedName] = struct{}{}
}

func (w *world) snapshot() *model.Snapshot {
	s := &model.Snapshot{
		Services:       map[model.ServicePortName]*model.ServicePort{},
		Endpoints:      map[model.ServicePortName][]*model.Endpoint{},
		PortsByService: map[types.NamespacedName][]*model.ServicePort{},
		Changed:        w.changed,
		Node:           w.node,
	}
	for n, sp := range w.ports {
		s.Services[n] = sp
		s.Endpoints[n] = w.eps[n]
		s.PortsByService[n.NamespacedName] = append(s.PortsByService[n.NamespacedName], sp)
	}
	w.changed = map[types.NamespacedName]struct{}{}
	return s
}

// referenceParams is the fixture of the reference's nftables example (3.3).
func referenceParams() Params {
	return Params{
		Family: model.IPv4, MasqueradeBit: 14,
		LocalDetector: DetectByCIDR(netip.MustParsePrefix("10.0.0.0/8")),
		NodePortIPs:   addrs("192.168.0.2"),
		ServiceCIDRs:  []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")},
	}
}

// testProxier is a Proxier on a knftables fake with a clock the test moves.
type testProxier struct {
	*Proxier
	fake  *knftables.Fake
	rec   *recorder
	clock *testingclock.FakePassiveClock
	// last is how the last sync wrote the kernel.
	last written
}

// recorder is knftables' fake, keeping the transactions it ran.
type recorder struct {
	*knftables.Fake
	txs []string
}

func (r *recorder) Run(ctx context.Context, tx *knftables.Transaction) error {
	r.txs = append(r.txs, tx.String())
	return r.Fake.Run(ctx, tx)
}

func newTestProxier(p Params) *testProxier {
	fam := knftables.IPv4Family
	if p.Family == model.IPv6 {
		fam = knftables.IPv6Family
	}
	tp := &testProxier{fake: knftables.NewFake(fam, TableName), clock: testingclock.NewFakePassiveClock(time.Unix(1_000_000, 0))}
	tp.rec = &recorder{Fake: tp.fake}
	tp.Proxier = NewProxier(p, NewFakeKernel(tp.rec), tp.clock, newMetrics())
	return tp
}

func (tp *testProxier) sync(t *testing.T, snap *model.Snapshot, full bool) {
	t.Helper()
	tp.rec.txs = nil
	w, err := tp.write(t.Context(), snap, full)
	if err != nil {
		t.Fatalf("sync (full=%v): %v", full, err)
	}
	tp.last = w
}

// dumpLines is the fake's table content as sorted "add ..." lines.
func (tp *testProxier) dumpLines() []string {
	lines := strings.Split(strings.TrimSpace(tp.fake.Dump()), "\n")
	sort.Strings(lines)
	return lines
}

// txLines are the operations of the transactions of the last sync, in order.
func (tp *testProxier) txLines() []string {
	var out []string
	for _, tx := range tp.rec.txs {
		out = append(out, strings.Split(strings.TrimSpace(tx), "\n")...)
	}
	return out
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func mustHave(t *testing.T, lines []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !contains(lines, w) {
			t.Errorf("missing line %q in:\n%s", w, strings.Join(lines, "\n"))
		}
	}
}

func mustNotMention(t *testing.T, lines []string, subs ...string) {
	t.Helper()
	for _, l := range lines {
		for _, s := range subs {
			if strings.Contains(l, s) {
				t.Errorf("unexpected %q in line %q", s, l)
			}
		}
	}
}

// dispatch is what a dispatch chain without affinity holds for eps ("ip . port"), in
// the fake's dump format: its rule and the fallback for a map miss, and its endpoint
// map's elements, one interval
// of the numgen range per endpoint.
func dispatch(family, chain string, eps ...string) []string {
	ip := "ip"
	if family == "ip6" {
		ip = "ip6"
	}
	lines := []string{"add rule " + family + " kube-proxy " + chain + " meta l4proto tcp dnat " + ip +
		" addr . port to numgen random mod 65536 map @" + chain,
		"add rule " + family + " kube-proxy " + chain + " drop comment \"" + mapMissComment + "\""}
	for i, e := range eps {
		lo, hi := i*endpointSlots/len(eps), (i+1)*endpointSlots/len(eps)-1
		lines = append(lines, "add element "+family+" kube-proxy "+chain+" { "+itoa(lo)+"-"+itoa(hi)+" : "+e+" }")
	}
	return lines
}

// newMetrics is a metric set on a registry of its own.
func newMetrics() *metrics.Metrics {
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		panic(err)
	}
	return m
}

// twoEndpointServices is a world of n TCP Services on port 80 in namespace ns, each with
// two endpoints on node2 (and NodePort 30000+i when nodePorts): enough objects that a
// first sync spans several netlink batches.
func twoEndpointServices(n int, ns, namePrefix string, nodePorts bool) *world {
	w := newWorld()
	for i := range n {
		sp := &model.ServicePort{Name: spn(ns, fmt.Sprintf("%s%05d", namePrefix, i), "http"),
			ClusterIPs: addrs(fmt.Sprintf("172.30.%d.%d", i/250, i%250+1)), Port: 80, Protocol: v1.ProtocolTCP}
		if nodePorts {
			sp.NodePort = int32(30000 + i)
		}
		w.set(sp, ep(fmt.Sprintf("10.181.%d.%d", i/250, i%250+1), 8080, "node2"), ep(fmt.Sprintf("10.182.%d.%d", i/250, i%250+1), 8080, "node2"))
	}
	return w
}
