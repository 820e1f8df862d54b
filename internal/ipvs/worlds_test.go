package ipvs

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kproxy/kproxy/internal/iptables"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/proxytest"
	"github.com/kproxy/kproxy/internal/trace"
)

// worldRig is a Proxier on fakes for the shared worlds: the node's addresses on eth0,
// pods in proxytest.ClusterCIDR.
func worldRig(t *testing.T) *rig {
	t.Helper()
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{h: newFakeHandle(), links: newFakeLinks(), ipt: iptables.NewFake(model.IPv4),
		metrics: m, clock: testingclock.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))}
	r.links.addrs["eth0"] = append(r.links.addrs["eth0"], proxytest.LocalAddresses()...)
	r.sets = &fakeIPSet{inUse: ipsetInUse(r.ipt)}
	cfg := Config{Family: model.IPv4, MasqueradeBit: 14}
	r.p = NewProxier(cfg, r.h, r.links, r.sets, r.ipt, r.metrics, r.clock)
	return r
}

func syncWorld(t *testing.T, w proxytest.World) (*rig, *model.Tracker) {
	t.Helper()
	r := worldRig(t)
	tr := model.NewTracker(proxytest.NodeName, nil, nil)
	proxytest.Feed(tr, w)
	r.sync(t, proxytest.Snapshot(tr), true)
	return r, tr
}

// state is everything the fakes hold, normalized: virtual servers and real servers,
// kube-ipvs0's addresses, the ipsets' members, the iptables tables.
func (r *rig) state(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{"ipvs": r.h.table()}
	bound, _ := r.links.Addrs(DummyInterface, model.IPv4)
	slices.SortFunc(bound, func(a, b netip.Addr) int { return a.Compare(b) })
	out["kube-ipvs0"] = strings.Join(mapStr(bound), " ")
	names, _ := r.sets.Names()
	for _, n := range names {
		members := slices.Clone(r.sets.sets[n])
		slices.Sort(members)
		out["ipset "+n] = r.sets.types[n] + ": " + strings.Join(members, " ")
	}
	for _, table := range []string{"filter", "nat", "mangle"} {
		save, err := r.ipt.Save(table)
		if err != nil {
			t.Fatal(err)
		}
		out["iptables "+table] = string(save)
	}
	return out
}

// A partial sync from one world to another leaves the fakes as a full sync of the
// second world leaves fresh ones.
func TestWorldsPartialSyncEqualsFullSync(t *testing.T) {
	for _, tr := range proxytest.Transitions() {
		from, to := tr[0], tr[1]
		t.Run(from.Name+"-to-"+to.Name, func(t *testing.T) {
			r, tracker := syncWorld(t, from)
			proxytest.Transition(tracker, from, to)
			r.sync(t, proxytest.Snapshot(tracker), false)
			fresh, _ := syncWorld(t, to)
			got, want := r.state(t), fresh.state(t)
			for k, w := range want {
				if got[k] != w {
					t.Errorf("%s after the partial sync:\n%s\nafter a full sync:\n%s", k, got[k], w)
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("%s exists after the partial sync only: %s", k, got[k])
				}
			}
		})
	}
}

// Every packet of a world goes where the table says, as the fakes' state sends it:
// the tracer evaluates the iptables rules with the ipsets' members, and the test's
// model of IPVS (ipvsOutcome) the virtual servers.
func TestWorldsTracedPackets(t *testing.T) {
	for _, w := range proxytest.Worlds() {
		t.Run(w.Name, func(t *testing.T) {
			r, _ := syncWorld(t, w)
			for _, p := range w.Packets {
				verdict, eps, details := r.ipvsOutcome(t, p.TracePacket(t))
				p.Check(t, proxytest.IPVS, verdict, eps, false, false, details)
			}
		})
	}
}

// ipvsOutcome is where the node sends a packet in IPVS mode, from the fakes' state.
// The tracer cannot evaluate IPVS, so this models the kernel's path: a packet from a
// pod or from outside runs nat PREROUTING and, addressed to a local address (the node's,
// or one on kube-ipvs0), filter INPUT, where the source-range firewall and
// KUBE-IPVS-FILTER may drop or reject it, and then IPVS in LOCAL_IN; the node's own
// packets meet IPVS in LOCAL_OUT, before any filter INPUT rule. A virtual server for
// the destination, protocol and port sends the connection to one of its real servers
// of non-zero weight; one without real servers leaves it to the local stack, which
// refuses it (reported as REJECT). Masquerading is not modelled.
func (r *rig) ipvsOutcome(t *testing.T, p trace.Packet) (trace.Verdict, []string, string) {
	t.Helper()
	local := slices.Clone(r.links.addrs["eth0"])
	local = append(local, r.links.addrs[DummyInterface]...)
	env := trace.Env{LocalAddresses: local, IPSets: r.sets.sets}
	filter, _ := r.ipt.Save("filter")
	nat, _ := r.ipt.Save("nat")
	res, err := trace.TraceIPTables(append(filter, nat...), p, env)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	_ = res.WriteText(&text)
	vs := r.virtualServer(p)
	if !slices.Contains(local, p.Destination) {
		vs = nil
	}
	// The node's own packets meet IPVS before filter INPUT; others after it.
	if (p.From != trace.FromNode || vs == nil) && (res.Verdict == trace.VerdictDrop || res.Verdict == trace.VerdictReject) {
		return res.Verdict, nil, text.String()
	}
	if vs == nil {
		return trace.VerdictNone, nil, text.String()
	}
	text.WriteString("IPVS:        virtual server " + vs.key.String() + "\n")
	var eps []string
	for ap, d := range r.h.dests[vs.key] {
		if d.Weight > 0 {
			eps = append(eps, ap.String())
		}
	}
	if len(eps) == 0 {
		return trace.VerdictReject, nil, text.String()
	}
	return trace.VerdictDNAT, eps, text.String()
}

type vsRef struct{ key VSKey }

// virtualServer finds the virtual server of the packet's destination, if any.
func (r *rig) virtualServer(p trace.Packet) *vsRef {
	proto := map[string]v1.Protocol{"tcp": v1.ProtocolTCP, "udp": v1.ProtocolUDP, "sctp": v1.ProtocolSCTP}[p.Protocol]
	k := VSKey{Addr: p.Destination, Protocol: proto, Port: p.Port}
	if _, ok := r.h.services[k]; !ok {
		return nil
	}
	return &vsRef{key: k}
}
