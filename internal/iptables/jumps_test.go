package iptables

import (
	"strings"
	"testing"
)

func TestMissingJumps(t *testing.T) {
	js := jumpRules(false)
	// A clean node: every jump is missing, listed in reverse so -I leaves them in order.
	all := missingJumps(js, map[string][]byte{})
	if got := len(all["filter"]) + len(all["nat"]); got != len(js) {
		t.Fatalf("clean node: %d missing jumps, want %d", got, len(js))
	}
	if all["nat"][0] != `-I POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING` {
		t.Errorf("first nat insert = %q", all["nat"][0])
	}
	// What iptables-save prints after they were inserted (matches in another order).
	saved := map[string][]byte{
		"nat": []byte(strings.Join([]string{
			`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
			`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
			`-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`,
		}, "\n")),
		"filter": []byte(`-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS` + "\n" +
			`-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD`),
	}
	missing := missingJumps(js, saved)
	if len(missing["nat"]) != 0 {
		t.Errorf("nat: %q missing, want none", missing["nat"])
	}
	if len(missing["filter"]) != len(js)-3-2 {
		t.Errorf("filter: %d missing, want %d: %q", len(missing["filter"]), len(js)-5, missing["filter"])
	}
	for _, l := range missing["filter"] {
		if strings.Contains(l, "kubernetes forwarding rules") || strings.Contains(l, "health check service ports") {
			t.Errorf("present jump inserted again: %s", l)
		}
	}
}
