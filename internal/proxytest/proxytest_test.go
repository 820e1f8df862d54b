package proxytest

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/model"
)

// A transition's snapshot marks exactly the Services the change touches, and leaves
// the tracker holding what feeding the second world from scratch gives.
func TestTransitionChangesOnlyWhatDiffers(t *testing.T) {
	a, b := worldA(), worldB()
	tr := model.NewTracker(NodeName, nil, nil)
	Feed(tr, a)
	tr.Snapshot()
	Transition(tr, a, b)
	snap := tr.Snapshot()
	var changed []string
	for nn := range snap.Changed {
		changed = append(changed, nn.String())
	}
	slices.Sort(changed)
	// noloc and the Services whose objects are the same in both worlds are untouched;
	// local and itp changed only through their EndpointSlices.
	want := []string{"ns1/web", "ns10/new", "ns2/np", "ns3/lb", "ns4/local", "ns5/itp", "ns6/term", "ns7/sticky", "ns8/empty"}
	if !slices.Equal(changed, want) {
		t.Errorf("changed Services %v, want %v", changed, want)
	}

	fresh := model.NewTracker(NodeName, nil, nil)
	Feed(fresh, b)
	want2 := fresh.Snapshot()
	names := func(m map[model.ServicePortName]*model.ServicePort) []string {
		var out []string
		for n := range maps.Keys(m) {
			out = append(out, n.String()+"/"+string(n.Protocol))
		}
		slices.Sort(out)
		return out
	}
	if got, w := names(snap.Services), names(want2.Services); !slices.Equal(got, w) {
		t.Errorf("ports after the transition %v, fed from scratch %v", got, w)
	}
	for name, eps := range want2.Endpoints {
		if a, b := endpointStrings(snap.Endpoints[name]), endpointStrings(eps); a != b {
			t.Errorf("%s: endpoints after the transition %s, fed from scratch %s", name, a, b)
		}
	}
	if _, ok := snap.PreviousPorts[types.NamespacedName{Namespace: "ns2", Name: "np"}]; !ok {
		t.Errorf("the deleted Service has no previous ports in the snapshot")
	}
}

func endpointStrings(eps []*model.Endpoint) string {
	var out []string
	for _, e := range eps {
		out = append(out, e.String())
	}
	return strings.Join(out, ",")
}

// The nft rule renderer refuses what it does not know rather than guessing.
func TestParseNFTRuleRefusesUnknownExpressions(t *testing.T) {
	for _, rule := range []string{"osf name Linux accept", "ip daddr", "dnat ip addr . port to numgen random mod 2", `comment "x`} {
		if _, _, err := parseNFTRule(rule); err == nil {
			t.Errorf("rule %q parsed; want an error", rule)
		}
	}
	stmts, comment, err := parseNFTRule(`ip saddr != { 10.0.0.0/8, 1.2.3.4 } drop comment "fw"`)
	if err != nil || len(stmts) != 2 || comment != "fw" {
		t.Errorf("firewall rule: %v, %q, %v", stmts, comment, err)
	}
}
