package nftables

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/proxytest"
	"github.com/kproxy/kproxy/internal/trace"
)

// syncWorld feeds a world to a new tracker and makes a Proxier on a fake sync it in
// full. The Proxier's settings are upstream's fixture (referenceParams).
func syncWorld(t *testing.T, w proxytest.World) (*testProxier, *model.Tracker) {
	t.Helper()
	tp := newTestProxier(referenceParams())
	tr := model.NewTracker(proxytest.NodeName, nil, nil)
	proxytest.Feed(tr, w)
	tp.sync(t, proxytest.Snapshot(tr), true)
	return tp, tr
}

// normalTable is the fake's table with rules in chain order and every other line
// (chains, sets, maps, elements) sorted: element order is not state.
func normalTable(tp *testProxier) (map[string][]string, []string) {
	return rulesByChain(strings.Split(tp.fake.Dump(), "\n"))
}

// A partial sync from one world to another leaves the table as a full sync of the
// second world leaves a fresh one. Chains the partial sync stopped using are deleted
// by the first sync a second later (kernels before 6.2 keep a dropped verdict-map
// reference until the commit ends), so the clock moves on and a sync without changes
// runs before the tables are compared.
func TestWorldsPartialSyncEqualsFullSync(t *testing.T) {
	for _, tr := range proxytest.Transitions() {
		from, to := tr[0], tr[1]
		t.Run(from.Name+"-to-"+to.Name, func(t *testing.T) {
			tp, tracker := syncWorld(t, from)
			proxytest.Transition(tracker, from, to)
			tp.sync(t, proxytest.Snapshot(tracker), false)
			if slices.Contains(tp.txLines(), "delete table ip kube-proxy") {
				t.Errorf("the partial sync rebuilt the table")
			}
			tp.clock.SetTime(tp.clock.Now().Add(2 * time.Second))
			tp.sync(t, proxytest.Snapshot(tracker), false)

			fresh, _ := syncWorld(t, to)
			gotRules, gotOther := normalTable(tp)
			wantRules, wantOther := normalTable(fresh)
			sameLines(t, "objects and elements after the partial sync vs a full sync", gotOther, wantOther)
			for chain, want := range wantRules {
				if got := gotRules[chain]; !slices.Equal(got, want) {
					t.Errorf("chain %s after the partial sync:\n%s\nafter a full sync:\n%s", chain, strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
			}
			for chain, got := range gotRules {
				if _, ok := wantRules[chain]; !ok {
					t.Errorf("chain %s has rules after the partial sync only: %v", chain, got)
				}
			}
		})
	}
}

// The tracer, run on the table the backend wrote (rendered as nft's JSON), sends every
// packet of a world where Kubernetes Service semantics say.
func TestWorldsTracedPackets(t *testing.T) {
	for _, w := range proxytest.Worlds() {
		t.Run(w.Name, func(t *testing.T) {
			tp, _ := syncWorld(t, w)
			dump, err := proxytest.NFTJSON(tp.fake, knftables.IPv4Family, TableName)
			if err != nil {
				t.Fatal(err)
			}
			tracePackets(t, dump, w.Packets)
		})
	}
}

func tracePackets(t *testing.T, dump []byte, packets []proxytest.Packet) {
	t.Helper()
	for _, p := range packets {
		r, err := trace.TraceNFTables(dump, p.TracePacket(t), trace.Env{LocalAddresses: proxytest.LocalAddresses()})
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		var text strings.Builder
		_ = r.WriteText(&text)
		p.Check(t, proxytest.NFTables, r.Verdict, r.EndpointAddresses(), r.Masqueraded, true, text.String())
	}
}

// The JSON rendering of the fake's table traces like nft's own JSON of the same table
// loaded into the kernel: every packet of every world gets the same verdict,
// endpoints and masquerade from both, which are what the table says.
func TestWorldsNFTJSONMatchesNft(t *testing.T) {
	enterTestNetns(t)
	for _, w := range proxytest.Worlds() {
		tp, _ := syncWorld(t, w)
		rendered, err := proxytest.NFTJSON(tp.fake, knftables.IPv4Family, TableName)
		if err != nil {
			t.Fatal(err)
		}
		load := exec.Command("nft", "-f", "-")
		load.Stdin = strings.NewReader("flush ruleset\n" + tp.fake.Dump())
		if out, err := load.CombinedOutput(); err != nil {
			t.Fatalf("world %s: nft -f of the fake's table: %v: %s", w.Name, err, out)
		}
		byNft := []byte(run(t, "nft", "-j", "list", "table", "ip", TableName))
		env := trace.Env{LocalAddresses: proxytest.LocalAddresses()}
		for _, p := range w.Packets {
			a, errA := trace.TraceNFTables(rendered, p.TracePacket(t), env)
			b, errB := trace.TraceNFTables(byNft, p.TracePacket(t), env)
			if errA != nil || errB != nil {
				t.Fatalf("world %s, %s: tracing the rendering: %v; nft's JSON: %v", w.Name, p.Name, errA, errB)
			}
			if a.Verdict != b.Verdict || !slices.Equal(a.EndpointAddresses(), b.EndpointAddresses()) || a.Masqueraded != b.Masqueraded {
				var ta, tb strings.Builder
				_ = a.WriteText(&ta)
				_ = b.WriteText(&tb)
				t.Errorf("world %s, %s: the rendering traces as\n%s\nnft's JSON as\n%s", w.Name, p.Name, ta.String(), tb.String())
			}
		}
		t.Run(w.Name, func(t *testing.T) { tracePackets(t, byNft, w.Packets) })
	}
}
