package iptables

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/proxytest"
	"github.com/kproxy/kproxy/internal/trace"
)

// worldParams are the settings of upstream's test fixture (reference 4.1): pods in
// 10.0.0.0/8, NodePorts on every local address, localhost NodePorts on.
func worldParams() Params {
	return Params{Family: model.IPv4, MasqueradeBit: 14, LocalhostNodePorts: true, DropInvalid: true,
		LocalDetector: DetectByCIDR(netip.MustParsePrefix(proxytest.ClusterCIDR))}
}

// worldProxier is a Proxier on a Fake; the sysctls it sets are kept, not written.
func worldProxier(t *testing.T) (*Proxier, *Fake, map[string]string) {
	t.Helper()
	fk := NewFake(model.IPv4)
	sysctls := map[string]string{}
	set := func(path, value string) error { sysctls[path] = value; return nil }
	return NewProxier(worldParams(), fk, set, newMetrics(t)), fk, sysctls
}

// syncWorld feeds a world to a new tracker and makes a Proxier sync it in full.
func syncWorld(t *testing.T, w proxytest.World) (*Fake, *model.Tracker, *Proxier) {
	t.Helper()
	px, fk, _ := worldProxier(t)
	tr := model.NewTracker(proxytest.NodeName, nil, nil)
	proxytest.Feed(tr, w)
	if err := px.Sync(t.Context(), proxytest.Snapshot(tr), true); err != nil {
		t.Fatalf("full sync of world %s: %v", w.Name, err)
	}
	return fk, tr, px
}

func saveTables(t *testing.T, fk *Fake) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, table := range []string{"filter", "nat", "mangle"} {
		save, err := fk.Save(table)
		if err != nil {
			t.Fatal(err)
		}
		out[table] = string(save)
	}
	return out
}

// A partial sync from one world to another leaves the kernel as a full sync of the
// second world leaves a fresh one: same chains, same rules, in the same order.
func TestWorldsPartialSyncEqualsFullSync(t *testing.T) {
	for _, tr := range proxytest.Transitions() {
		from, to := tr[0], tr[1]
		t.Run(from.Name+"-to-"+to.Name, func(t *testing.T) {
			fk, tracker, px := syncWorld(t, from)
			restores := fk.Restores()
			proxytest.Transition(tracker, from, to)
			snap := proxytest.Snapshot(tracker)
			if err := px.Sync(t.Context(), snap, false); err != nil {
				t.Fatalf("partial sync to world %s: %v", to.Name, err)
			}
			if fk.Restores() != restores+1 {
				t.Errorf("the partial sync ran %d restores, want 1", fk.Restores()-restores)
			}
			fresh, _, _ := syncWorld(t, to)
			got, want := saveTables(t, fk), saveTables(t, fresh)
			for table := range want {
				if got[table] != want[table] {
					t.Errorf("table %s after the partial sync differs from a full sync:\n%s", table, lineDiff(got[table], want[table]))
				}
			}
		})
	}
}

// The tracer, run on what the backend wrote, sends every packet of a world where
// Kubernetes Service semantics say.
func TestWorldsTracedPackets(t *testing.T) {
	for _, w := range proxytest.Worlds() {
		t.Run(w.Name, func(t *testing.T) {
			fk, _, _ := syncWorld(t, w)
			tables := saveTables(t, fk)
			dump := []byte(tables["filter"] + tables["nat"])
			for _, p := range w.Packets {
				r, err := trace.TraceIPTables(dump, p.TracePacket(t), trace.Env{LocalAddresses: proxytest.LocalAddresses()})
				if err != nil {
					t.Fatalf("%s: %v", p.Name, err)
				}
				var text strings.Builder
				_ = r.WriteText(&text)
				p.Check(t, proxytest.IPTables, r.Verdict, r.EndpointAddresses(), r.Masqueraded, true, text.String())
			}
		})
	}
}

// Cleanup removes everything a sync of a world wrote, in restores the kernel accepts
// (the fake refuses deleting a chain that is still referenced or holds rules).
func TestWorldsCleanupOnTheFake(t *testing.T) {
	for _, w := range proxytest.Worlds() {
		fk, _, _ := syncWorld(t, w)
		if err := Cleanup(fk); err != nil {
			t.Fatalf("world %s: cleanup: %v", w.Name, err)
		}
		for table, save := range saveTables(t, fk) {
			if strings.Contains(save, "KUBE-") {
				t.Errorf("world %s: after cleanup table %s still holds:\n%s", w.Name, table, save)
			}
		}
	}
}

// Flushed notices chains emptied or deleted behind the Proxier's back, and a full sync
// repairs them.
func TestFlushedOnTheFake(t *testing.T) {
	fk, _, px := syncWorld(t, proxytest.Worlds()[0])
	want := saveTables(t, fk)
	if px.Flushed(t.Context()) {
		t.Fatal("Flushed right after a sync")
	}
	for _, breakIt := range [][]string{{"-t", "nat", "-F"}, {"-t", "mangle", "-X", chainCanary}, {"-t", "filter", "-F", "FORWARD"}} {
		if err := fk.Run(breakIt...); err != nil {
			t.Fatal(err)
		}
		if !px.Flushed(t.Context()) {
			t.Errorf("Flushed missed iptables %v", breakIt)
		}
		tr := model.NewTracker(proxytest.NodeName, nil, nil)
		proxytest.Feed(tr, proxytest.Worlds()[0])
		if err := px.Sync(t.Context(), proxytest.Snapshot(tr), true); err != nil {
			t.Fatalf("full sync after iptables %v: %v", breakIt, err)
		}
		if px.Flushed(t.Context()) {
			t.Errorf("still Flushed after the full sync that followed iptables %v", breakIt)
		}
		got := saveTables(t, fk)
		for table := range want {
			if got[table] != want[table] {
				t.Errorf("after iptables %v and a full sync, table %s:\n%s", breakIt, table, lineDiff(got[table], want[table]))
			}
		}
	}
}
