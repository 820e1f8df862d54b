package iptables

import (
	"testing"

	"github.com/kproxy/kproxy/internal/model"
)

// FuzzFakeRestore: the fake must refuse bad restore input as the kernel does, with an
// error, never a panic, and stay printable afterwards.
func FuzzFakeRestore(f *testing.F) {
	f.Add([]byte("*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-X\nCOMMIT\n"))
	f.Add([]byte("*filter\n:KUBE-FORWARD - [0:0]\n-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n-X KUBE-FORWARD\nCOMMIT\n"))
	f.Add([]byte("*nat\n-A KUBE-MISSING -j ACCEPT\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fk := NewFake(model.IPv4)
		_ = fk.Restore(data)
		for _, table := range []string{"nat", "filter", "mangle"} {
			if _, err := fk.Save(table); err != nil {
				t.Fatalf("save %s after a restore: %v", table, err)
			}
		}
	})
}
