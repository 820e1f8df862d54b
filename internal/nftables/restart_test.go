package nftables

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"

	"github.com/kproxy/kproxy/internal/model"
)

func TestChooseRebuild(t *testing.T) {
	boom := errors.New("netlink: boom")
	cases := []struct {
		name          string
		rules         int
		err           error
		inPlaceFailed bool
		want          rebuild
	}{
		{"no table or an empty services chain: nothing is served yet", 0, nil, false, rebuildApart},
		{"empty, even after a failed rebuild in place", 0, nil, true, rebuildApart},
		{"the table serves traffic: keep its hooks", 3, nil, false, rebuildInPlace},
		{"the rebuild in place failed: objects may clash", 3, nil, true, rebuildReplace},
		{"the rules cannot be counted", 0, boom, false, rebuildReplace},
	}
	for _, c := range cases {
		if got := chooseRebuild(c.rules, c.err, c.inPlaceFailed); got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, got, c.want)
		}
	}
}

// restarted is a new Proxier (a new kproxy process, which knows nothing of the
// kernel) on the table tp's fake holds.
func restarted(tp *testProxier) *testProxier {
	tp2 := &testProxier{fake: tp.fake, clock: tp.clock}
	tp2.rec = &recorder{Fake: tp.fake}
	tp2.Proxier = NewProxier(referenceParams(), NewFakeKernel(tp2.rec), tp2.clock, newMetrics())
	return tp2
}

// A kproxy restarted on a table that serves traffic rebuilds it in place, keeping
// its base chains (and so their hooks) instead of swapping them under traffic. What
// the previous process left and is no longer wanted goes, and the table ends up as a
// fresh full sync makes it.
func TestRestartRebuildsServingTableInPlace(t *testing.T) {
	w := referenceWorld()
	gone := &model.ServicePort{Name: spn("ns9", "gone", "p80"), ClusterIPs: addrs("172.30.0.99"), Port: 80, Protocol: v1.ProtocolTCP}
	w.set(gone, ep("10.180.0.9", 80, "node2"))
	old := newTestProxier(referenceParams())
	old.sync(t, w.snapshot(), true)

	w.remove(gone.Name)
	tp := restarted(old)
	tp.sync(t, w.snapshot(), true)
	if slices.Contains(tp.txLines(), "delete table ip kube-proxy") {
		t.Errorf("the restarted proxier replaced a table that serves traffic")
	}
	mustNotMention(t, tp.txLines(), "delete chain ip kube-proxy nat-prerouting", "delete chain ip kube-proxy filter-forward")
	// svc1's chain is rewritten: its endpoint map is recreated (see build.full).
	mustHave(t, tp.txLines(), "delete map ip kube-proxy "+svc1Chain)
	tp.clock.SetTime(tp.clock.Now().Add(2 * chainDeleteDelay))
	tp.sync(t, w.snapshot(), false)

	fresh := newTestProxier(referenceParams())
	fresh.sync(t, w.snapshot(), true)
	sameLines(t, "table after the restart vs a fresh full sync", tp.dumpLines(), fresh.dumpLines())
}

// failingOnce fails the first transaction it is given.
type failingOnce struct {
	*recorder
	failed bool
}

func (f *failingOnce) Run(ctx context.Context, tx *knftables.Transaction) error {
	if !f.failed {
		f.failed = true
		f.txs = append(f.txs, tx.String())
		return errors.New("nft: File exists")
	}
	return f.recorder.Run(ctx, tx)
}

// When the rebuild in place fails (objects of another version may clash with ours),
// the next sync replaces the table.
func TestFailedRebuildInPlaceReplacesTheTable(t *testing.T) {
	w := referenceWorld()
	old := newTestProxier(referenceParams())
	old.sync(t, w.snapshot(), true)

	tp := restarted(old)
	fail := &failingOnce{recorder: tp.rec}
	tp.Proxier = NewProxier(referenceParams(), NewFakeKernel(fail), tp.clock, newMetrics())
	if err := tp.Sync(t.Context(), w.snapshot(), true); err == nil {
		t.Fatal("the failing transaction did not fail")
	}
	if slices.Contains(tp.txLines(), "delete table ip kube-proxy") {
		t.Errorf("the first rebuild was not in place")
	}
	tp.sync(t, w.snapshot(), false)
	if !slices.Contains(tp.txLines(), "delete table ip kube-proxy") {
		t.Errorf("after a failed rebuild in place the table was not replaced: %v", tp.txLines())
	}
	tp.clock.SetTime(tp.clock.Now().Add(time.Hour))
	fresh := newTestProxier(referenceParams())
	fresh.sync(t, w.snapshot(), true)
	sameLines(t, "table after the replacement vs a fresh full sync", tp.dumpLines(), fresh.dumpLines())
}
