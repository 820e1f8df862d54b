package nftables

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"

	"github.com/kproxy/kproxy/internal/model"
)

const (
	svc1Chain = "service-ULMVA6XW-ns1/svc1/tcp/p80"
	svc3Chain = "service-4AT6LBPK-ns3/svc3/tcp/p80"
	ep4Chain  = "endpoint-A6C6ULNT-ns3/svc3/tcp/p80__10.180.0.4/80"
	ep5Set    = "affinity-VMM5FPNP-ns3/svc3/tcp/p80__10.180.0.5/80"
	ep5Chain  = "endpoint-VMM5FPNP-ns3/svc3/tcp/p80__10.180.0.5/80"
)

func svc1(eps ...*model.Endpoint) (*model.ServicePort, []*model.Endpoint) {
	return &model.ServicePort{Name: spn("ns1", "svc1", "p80"), ClusterIPs: addrs("172.30.0.41"), Port: 80, Protocol: v1.ProtocolTCP}, eps
}

func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Errorf("%s:\n got:\n%s\nwant:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The reference's partial transaction (3.4): adding a local endpoint to svc1 touches
// svc1's endpoint map and the hairpin set, nothing else. Upstream rewrites svc1's chain
// here; kproxy's chain does not change with the endpoints, so this is elements only.
func TestPartialSyncAfterEndpointAddTouchesOnlyThatService(t *testing.T) {
	w := referenceWorld()
	w.setAll(svc1(ep("10.180.0.1", 80, "node2")))
	tp := newTestProxier(referenceParams())
	tp.sync(t, w.snapshot(), true)

	w.setAll(svc1(ep("10.180.0.1", 80, "node2"), ep("10.180.0.2", 80, "test-node")))
	tp.sync(t, w.snapshot(), false)
	sameLines(t, "partial transaction", tp.txLines(), []string{
		"add element ip kube-proxy hairpin-connections { 10.180.0.2 . 10.180.0.2 . tcp . 80 }",
		"delete element ip kube-proxy " + svc1Chain + " { 0-65535 }",
		"add element ip kube-proxy " + svc1Chain + " { 0-32767 : 10.180.0.1 . 80 }",
		"add element ip kube-proxy " + svc1Chain + " { 32768-65535 : 10.180.0.2 . 80 }",
	})

	// The kernel now holds what a full sync of the same world writes.
	want := newTestProxier(referenceParams())
	w.changed = nil
	want.sync(t, w.snapshot(), true)
	sameLines(t, "table after partial sync vs full sync", tp.dumpLines(), want.dumpLines())
}

// An unchanged Service costs nothing; a Service changed without effect costs nothing.
func TestPartialSyncWithoutEffectIsEmpty(t *testing.T) {
	w := referenceWorld()
	tp := newTestProxier(referenceParams())
	tp.sync(t, w.snapshot(), true)
	tp.sync(t, w.snapshot(), false)
	if tp.last.operations != 0 {
		t.Errorf("sync without changes ran %d operations: %v", tp.last.operations, tp.txLines())
	}
	sp, eps := svc1(ep("10.180.0.1", 80, "node2"), ep("10.180.0.2", 80, "node2"))
	w.set(sp, eps...)
	tp.sync(t, w.snapshot(), false)
	if tp.last.operations != 0 {
		t.Errorf("sync of an identical Service ran %d operations: %v", tp.last.operations, tp.txLines())
	}
}

// Reference 3.4: removing every endpoint swaps the service-ips element for a reject in
// no-endpoint-services; the unused chain is flushed, and deleted a second later.
func TestEndpointsGoneRejectsAndRetiresChain(t *testing.T) {
	w := referenceWorld()
	w.setAll(svc1(ep("10.180.0.1", 80, "test-node"), ep("10.180.0.2", 80, "test-node")))
	tp := newTestProxier(referenceParams())
	tp.sync(t, w.snapshot(), true)

	w.setAll(svc1())
	tp.sync(t, w.snapshot(), false)
	sameLines(t, "partial transaction", tp.txLines(), []string{
		`add element ip kube-proxy no-endpoint-services { 172.30.0.41 . tcp . 80 comment "ns1/svc1:p80" : goto reject-chain }`,
		"flush chain ip kube-proxy " + svc1Chain,
		"delete element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 }",
		"delete element ip kube-proxy hairpin-connections { 10.180.0.1 . 10.180.0.1 . tcp . 80 }",
		"delete element ip kube-proxy hairpin-connections { 10.180.0.2 . 10.180.0.2 . tcp . 80 }",
		"delete map ip kube-proxy " + svc1Chain,
	})
	if !contains(tp.dumpLines(), "add chain ip kube-proxy "+svc1Chain) {
		t.Fatalf("chain deleted in the transaction that dropped its references")
	}

	tp.clock.SetTime(tp.clock.Now().Add(500 * time.Millisecond))
	tp.sync(t, w.snapshot(), false)
	if tp.last.operations != 0 {
		t.Errorf("chain deleted before the delay: %v", tp.txLines())
	}
	tp.clock.SetTime(tp.clock.Now().Add(time.Second))
	tp.sync(t, w.snapshot(), false)
	sameLines(t, "delayed delete", tp.txLines(), []string{"delete chain ip kube-proxy " + svc1Chain})
	mustNotMention(t, tp.dumpLines(), svc1Chain)
}

func TestDeletedServiceIsRemoved(t *testing.T) {
	w := referenceWorld()
	tp := newTestProxier(referenceParams())
	tp.sync(t, w.snapshot(), true)

	w.remove(spn("ns3", "svc3", "p80"))
	tp.sync(t, w.snapshot(), false)
	tx := tp.txLines()
	// Affinity sets go at once; their chains are flushed first, in the same transaction.
	for _, c := range []string{svc3Chain, ep4Chain, ep5Chain} {
		mustHave(t, tx, "flush chain ip kube-proxy "+c)
	}
	mustHave(t, tx, "delete set ip kube-proxy "+ep5Set,
		"delete element ip kube-proxy cluster-ips { 172.30.0.43 }",
		"delete element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 }")
	mustNotMention(t, tx, "svc1", "svc2")

	tp.clock.SetTime(tp.clock.Now().Add(2 * time.Second))
	tp.sync(t, w.snapshot(), false)
	mustNotMention(t, tp.dumpLines(), "svc3", "172.30.0.43")

	// The same as a fresh full sync of the remaining Services.
	want := newTestProxier(referenceParams())
	want.sync(t, w.snapshot(), true)
	sameLines(t, "table after delete vs full sync", tp.dumpLines(), want.dumpLines())
}

// Two ports of one ClusterIP share its cluster-ips element: it stays until both are gone.
func TestSharedElementsStayWhileOneOwnerWantsThem(t *testing.T) {
	w := newWorld()
	a := &model.ServicePort{Name: spn("ns", "web", "http"), ClusterIPs: addrs("172.30.0.10"), Port: 80, Protocol: v1.ProtocolTCP}
	b := &model.ServicePort{Name: spn("ns", "web", "https"), ClusterIPs: addrs("172.30.0.10"), Port: 443, Protocol: v1.ProtocolTCP}
	w.set(a, ep("10.180.0.1", 80, "node2"))
	w.set(b, ep("10.180.0.1", 443, "node2"))
	tp := newTestProxier(referenceParams())
	tp.sync(t, w.snapshot(), true)

	w.remove(a.Name)
	tp.sync(t, w.snapshot(), false)
	mustHave(t, tp.dumpLines(), "add element ip kube-proxy cluster-ips { 172.30.0.10 }")
	mustNotMention(t, tp.txLines(), "cluster-ips {")

	w.remove(b.Name)
	tp.sync(t, w.snapshot(), false)
	mustHave(t, tp.txLines(), "delete element ip kube-proxy cluster-ips { 172.30.0.10 }")
}

func TestAffinityTimeoutChangeRecreatesSets(t *testing.T) {
	w := referenceWorld()
	tp := newTestProxier(referenceParams())
	tp.sync(t, w.snapshot(), true)

	sp := *w.ports[spn("ns3", "svc3", "p80")]
	sp.StickyMaxAgeSeconds = 60
	w.set(&sp, w.eps[sp.Name]...)
	tp.sync(t, w.snapshot(), false)
	tx := tp.txLines()
	del := slices.Index(tx, "delete set ip kube-proxy "+ep5Set)
	flush := slices.Index(tx, "flush chain ip kube-proxy "+ep5Chain)
	add := slices.Index(tx, "add set ip kube-proxy "+ep5Set+" { type ipv4_addr ; flags dynamic,timeout ; timeout 60s ; }")
	if del < 0 || flush < 0 || add < 0 || flush > del || del > add {
		t.Errorf("want flush of the referring chain, then delete and add of the set; got:\n%s", strings.Join(tx, "\n"))
	}
}

// Elements and chains removed behind kproxy's back are restored by a full sync; a
// stranger's chain is retired; clients in affinity sets survive.
func TestFullSyncRestoresWhatWasRemovedBehindOurBack(t *testing.T) {
	w := referenceWorld()
	tp := newTestProxier(referenceParams())
	tp.sync(t, w.snapshot(), true)
	want := tp.dumpLines()
	if tp.Flushed(t.Context()) {
		t.Fatal("Flushed right after a sync")
	}

	tx := tp.fake.NewTransaction()
	tx.Delete(&knftables.Element{Map: mapServiceIPs, Key: []string{"172.30.0.41", "tcp", "80"}})
	tx.Delete(&knftables.Element{Set: setClusterIPs, Key: []string{"172.30.0.42"}})
	tx.Delete(&knftables.Chain{Name: ep4Chain})
	tx.Add(&knftables.Chain{Name: "someone-elses"})
	tx.Add(&knftables.Element{Set: ep5Set, Key: []string{"10.0.0.7"}})
	if err := tp.fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	tp.sync(t, w.snapshot(), true)
	got := tp.dumpLines()
	client := "add element ip kube-proxy " + ep5Set + " { 10.0.0.7 }"
	mustHave(t, got, client, "add chain ip kube-proxy someone-elses")
	sameLines(t, "restored table", slices.DeleteFunc(got, func(l string) bool {
		return l == client || l == "add chain ip kube-proxy someone-elses"
	}), want)
	// Chains the kernel still holds unchanged are not rewritten.
	mustNotMention(t, tp.txLines(), "add rule ip kube-proxy "+svc1Chain)

	tp.clock.SetTime(tp.clock.Now().Add(2 * time.Second))
	tp.sync(t, w.snapshot(), true)
	mustNotMention(t, tp.dumpLines(), "someone-elses")
}

// A flushed table (its chains emptied) is noticed by Flushed and rebuilt from scratch.
func TestFlushedTableIsRebuilt(t *testing.T) {
	w := referenceWorld()
	tp := newTestProxier(referenceParams())
	tp.sync(t, w.snapshot(), true)
	want := tp.dumpLines()
	tx := tp.fake.NewTransaction()
	for _, c := range []string{chainServices, svc1Chain, chainMasquerading} {
		tx.Flush(&knftables.Chain{Name: c})
	}
	if err := tp.fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	if !tp.Flushed(t.Context()) {
		t.Fatal("Flushed did not notice the services chain was flushed")
	}
	tp.sync(t, w.snapshot(), true)
	if tp.Flushed(t.Context()) {
		t.Error("still Flushed after a full sync")
	}
	sameLines(t, "rebuilt table", tp.dumpLines(), want)
}

func TestTableDeletedBehindOurBackIsRebuilt(t *testing.T) {
	w := referenceWorld()
	tp := newTestProxier(referenceParams())
	tp.sync(t, w.snapshot(), true)
	want := tp.dumpLines()
	if err := Cleanup(tp.fake); err != nil {
		t.Fatal(err)
	}
	if !tp.Flushed(t.Context()) {
		t.Fatal("Flushed did not notice the table is gone")
	}
	tp.sync(t, w.snapshot(), true)
	sameLines(t, "rebuilt table", tp.dumpLines(), want)
}

// After a failed transaction the Proxier forgets the kernel's state: its next sync
// rebuilds the table even when the caller asks for a partial one.
func TestSyncAfterFailureRebuilds(t *testing.T) {
	w := referenceWorld()
	tp := newTestProxier(referenceParams())
	tp.sync(t, w.snapshot(), true)
	want := tp.dumpLines()
	if err := Cleanup(tp.fake); err != nil {
		t.Fatal(err)
	}
	w.remove(spn("ns1", "svc1", "p80"))
	if err := tp.Sync(t.Context(), w.snapshot(), false); err == nil {
		t.Fatal("partial sync into a missing table succeeded")
	}
	sp, eps := svc1(ep("10.180.0.1", 80, "node2"), ep("10.180.0.2", 80, "node2"))
	w.set(sp, eps...)
	tp.sync(t, w.snapshot(), false)
	if !contains(tp.txLines(), "delete table ip kube-proxy") {
		t.Errorf("sync after a failure did not rebuild the table: %v", tp.txLines())
	}
	sameLines(t, "rebuilt table", tp.dumpLines(), want)
}

func TestCleanupIgnoresMissingTable(t *testing.T) {
	fake := knftables.NewFake(knftables.IPv4Family, TableName)
	if err := Cleanup(fake); err != nil {
		t.Fatalf("cleanup of a missing table: %v", err)
	}
	tp := newTestProxier(referenceParams())
	tp.sync(t, referenceWorld().snapshot(), true)
	if err := Cleanup(tp.fake); err != nil {
		t.Fatal(err)
	}
	if tp.fake.Table != nil {
		t.Errorf("table still there after Cleanup:\n%s", tp.fake.Dump())
	}
}

// The burst case of issue 7: an endpoint replaced by another, or added, or the last
// but one removed, changes only endpoint map elements (and the hairpin set): no chain
// is added, flushed or rewritten.
func TestEndpointChangesAreElementUpdatesOnly(t *testing.T) {
	w := referenceWorld()
	tp := newTestProxier(referenceParams())
	tp.sync(t, w.snapshot(), true)
	steps := [][]*model.Endpoint{
		{ep("10.180.0.1", 80, "node2"), ep("10.180.0.9", 80, "node2")},                                    // replaced
		{ep("10.180.0.1", 80, "node2"), ep("10.180.0.9", 80, "node2"), ep("10.180.0.3", 80, "test-node")}, // added
		{ep("10.180.0.3", 80, "test-node")},                                                               // down to one
		{ep("10.180.0.3", 80, "test-node"), ep("10.180.0.4", 80, "node2")},                                // one to two
	}
	for i, eps := range steps {
		w.setAll(svc1(eps...))
		tp.sync(t, w.snapshot(), false)
		lines := tp.txLines()
		if len(lines) == 0 {
			t.Fatalf("step %d: empty transaction", i)
		}
		for _, l := range lines {
			if !strings.Contains(l, " element ip kube-proxy "+svc1Chain+" ") && !strings.Contains(l, " element ip kube-proxy hairpin-connections ") {
				t.Errorf("step %d: %q is not an endpoint map or hairpin element update", i, l)
			}
		}
		want := newTestProxier(referenceParams())
		w.changed = nil
		want.sync(t, w.snapshot(), true)
		sameLines(t, "table after partial sync vs full sync", tp.dumpLines(), want.dumpLines())
	}
}

// Rules deleted from or inserted into a per-Service chain that the previous sync
// wrote, which no flush check notices, are repaired by the next full sync: the chain's
// rule count differs from what was written, so it is rewritten.
func TestFullSyncRepairsEditedServiceChains(t *testing.T) {
	w := referenceWorld()
	tp := newTestProxier(referenceParams())
	tp.sync(t, w.snapshot(), true)
	want := tp.dumpLines()

	rules, err := tp.fake.ListRules(t.Context(), svc1Chain)
	if err != nil || len(rules) == 0 {
		t.Fatalf("rules of %s: %v, %v", svc1Chain, rules, err)
	}
	tx := tp.fake.NewTransaction()
	tx.Delete(&knftables.Rule{Chain: svc1Chain, Handle: rules[len(rules)-1].Handle})
	tx.Insert(&knftables.Rule{Chain: ep4Chain, Rule: "ip saddr 192.0.2.10 return"})
	if err := tp.fake.Run(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	if got := tp.dumpLines(); slices.Equal(got, want) {
		t.Fatal("the edits did not change the table")
	}
	tp.sync(t, w.snapshot(), true)
	sameLines(t, "table after the full sync", tp.dumpLines(), want)
	mustHave(t, tp.txLines(), "flush chain ip kube-proxy "+svc1Chain, "flush chain ip kube-proxy "+ep4Chain)
}
