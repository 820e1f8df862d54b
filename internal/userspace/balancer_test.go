package userspace

import (
	"net/netip"
	"testing"
	"time"

	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"
)

func eps(ss ...string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, s := range ss {
		out = append(out, netip.MustParseAddrPort(s))
	}
	return out
}

var clientA, clientB = netip.MustParseAddr("10.244.1.11"), netip.MustParseAddr("10.244.1.12")

func TestRoundRobinVisitsEveryEndpointInTurn(t *testing.T) {
	b := newBalancer(clock.RealClock{})
	b.update(eps("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"), nil, 0)
	count := map[netip.AddrPort]int{}
	var order []netip.AddrPort
	for range 9 {
		ep, ok := b.pick(clusterSet, clientA, nil)
		if !ok {
			t.Fatal("pick failed with three endpoints")
		}
		count[ep]++
		order = append(order, ep)
	}
	for ep, n := range count {
		if n != 3 {
			t.Errorf("%s picked %d times in 9, want 3 (%v)", ep, n, order)
		}
	}
	for i := 3; i < 9; i++ {
		if order[i] != order[i-3] {
			t.Errorf("round robin order not periodic: %v", order)
			break
		}
	}
	// The Local set is its own rotation, and empty here.
	if _, ok := b.pick(localSet, clientA, nil); ok {
		t.Errorf("pick from an empty Local set succeeded")
	}
}

func TestPickSkipsFailedEndpoints(t *testing.T) {
	b := newBalancer(clock.RealClock{})
	b.update(eps("10.0.0.1:80", "10.0.0.2:80"), nil, 0)
	skip := eps("10.0.0.1:80")
	for range 4 {
		if ep, ok := b.pick(clusterSet, clientA, skip); !ok || ep == skip[0] {
			t.Fatalf("pick with 10.0.0.1 skipped = %v, %v", ep, ok)
		}
	}
	if _, ok := b.pick(clusterSet, clientA, eps("10.0.0.1:80", "10.0.0.2:80")); ok {
		t.Errorf("pick with every endpoint skipped succeeded")
	}
}

func TestAffinityHoldsUntilTimeout(t *testing.T) {
	clk := testingclock.NewFakePassiveClock(time.Unix(1000, 0))
	b := newBalancer(clk)
	b.update(eps("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"), nil, 10*time.Second)
	first, _ := b.pick(clusterSet, clientA, nil)
	for range 5 {
		clk.SetTime(clk.Now().Add(9 * time.Second)) // each use refreshes the entry
		if ep, _ := b.pick(clusterSet, clientA, nil); ep != first {
			t.Fatalf("client A moved from %s to %s within the affinity timeout", first, ep)
		}
	}
	// Another client is balanced independently (round robin moved on).
	if ep, _ := b.pick(clusterSet, clientB, nil); ep == first {
		t.Errorf("client B got A's endpoint %s; round robin should have moved on", ep)
	}
	// After the timeout without use, A is balanced afresh.
	clk.SetTime(clk.Now().Add(11 * time.Second))
	seen := map[netip.AddrPort]bool{}
	for range 3 {
		clk.SetTime(clk.Now().Add(11 * time.Second))
		ep, _ := b.pick(clusterSet, clientA, nil)
		seen[ep] = true
	}
	if len(seen) < 2 {
		t.Errorf("after the timeout client A kept getting %v", seen)
	}
}

func TestEndpointChangeRebalancesStickyClient(t *testing.T) {
	clk := testingclock.NewFakePassiveClock(time.Unix(1000, 0))
	b := newBalancer(clk)
	b.update(eps("10.0.0.1:80", "10.0.0.2:80"), nil, time.Hour)
	first, _ := b.pick(clusterSet, clientA, nil)
	var other netip.AddrPort
	for _, e := range eps("10.0.0.1:80", "10.0.0.2:80") {
		if e != first {
			other = e
		}
	}
	if !b.update([]netip.AddrPort{other, netip.MustParseAddrPort("10.0.0.3:80")}, nil, time.Hour) {
		t.Fatal("update with new endpoints reported no change")
	}
	if b.contains(first) {
		t.Errorf("removed endpoint %s still contained", first)
	}
	ep, ok := b.pick(clusterSet, clientA, nil)
	if !ok || ep == first {
		t.Errorf("sticky client still sent to removed endpoint %s (got %s, %v)", first, ep, ok)
	}
	if again, _ := b.pick(clusterSet, clientA, nil); again != ep {
		t.Errorf("new affinity not kept: %s then %s", ep, again)
	}
	if b.update([]netip.AddrPort{other, netip.MustParseAddrPort("10.0.0.3:80")}, nil, time.Hour) {
		t.Errorf("identical update reported a change")
	}
}
