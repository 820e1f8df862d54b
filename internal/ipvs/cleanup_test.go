package ipvs

import (
	"testing"

	"github.com/kproxy/kproxy/internal/iptables"
	"github.com/kproxy/kproxy/internal/model"
)

func TestIPTablesModeLeftovers(t *testing.T) {
	cases := []struct {
		name  string
		chain string
		want  bool
	}{
		{"per-service chain", "KUBE-SVC-ABCDEF0123456789", true},
		{"local-policy chain", "KUBE-SVL-ABCDEF0123456789", true},
		{"endpoint chain", "KUBE-SEP-ABCDEF0123456789", true},
		{"external chain", "KUBE-EXT-ABCDEF0123456789", true},
		{"iptables mode's NodePort chain", "KUBE-NODEPORTS", true},
		{"ipvs mode's NodePort chain", chainNodePort, false},
		{"ipvs mode's services chain", chainServices, false},
		{"a lookalike", "KUBE-SVCX", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsIPTablesModeChain(tc.chain); got != tc.want {
				t.Errorf("IsIPTablesModeChain(%q) = %v, want %v", tc.chain, got, tc.want)
			}
			ipt := iptables.NewFake(model.IPv4)
			if err := ipt.Restore([]byte("*nat\n:" + tc.chain + " - [0:0]\nCOMMIT\n")); err != nil {
				t.Fatal(err)
			}
			if got := HasIPTablesModeLeftovers(ipt); got != tc.want {
				t.Errorf("HasIPTablesModeLeftovers with nat chain %s = %v, want %v", tc.chain, got, tc.want)
			}
			// The same chain in another table is no leftover of the nat table.
			other := iptables.NewFake(model.IPv4)
			if err := other.Restore([]byte("*filter\n:" + tc.chain + " - [0:0]\nCOMMIT\n")); err != nil {
				t.Fatal(err)
			}
			if HasIPTablesModeLeftovers(other) {
				t.Errorf("HasIPTablesModeLeftovers counted filter chain %s", tc.chain)
			}
		})
	}
}
