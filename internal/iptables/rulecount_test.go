package iptables

import "testing"

func TestRuleCounts(t *testing.T) {
	c := ruleCounts{}
	// Pieces of an input need not end at a line's end (the per-port chains are kept in
	// fixed-size blocks).
	c.apply(Input{[]byte("*filter\n:KUBE-FORWARD - [0:0]\n-A KUBE-FORWARD -j ACCEPT\nCOMMIT\n*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-SVC-B - [0:0]\n-A KUBE-SER"),
		[]byte("VICES -j KUBE-SVC-A\n-A KUBE-SERVICES -j KUBE-SVC-B\n-A KUBE-SVC-A -j DNAT\n-A KU"), []byte("BE-SVC-B -j DNAT\n-A KUBE-SVC-B -j DNAT\nCOMMIT\n")}, true)
	if got := c["nat"]["KUBE-SERVICES"]; got != 2 {
		t.Errorf("KUBE-SERVICES has %d rules, want 2", got)
	}
	if got := c.total("nat"); got != 5 {
		t.Errorf("after a full sync nat has %d rules, want 5", got)
	}
	// A partial sync rewrites KUBE-SERVICES and deletes B; A is untouched.
	c.apply(Input{[]byte("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-B - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-A\n-X KUBE-SVC-B\nCOMMIT\n")}, false)
	if got := c.total("nat"); got != 2 {
		t.Errorf("after a partial sync nat has %d rules, want 2 (KUBE-SERVICES 1, KUBE-SVC-A 1)", got)
	}
	if got := c.total("filter"); got != 1 {
		t.Errorf("filter has %d rules, want 1 (untouched by the partial sync)", got)
	}
	c.apply(Input{[]byte("*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n")}, true)
	if got := c.total("nat"); got != 0 || c.total("filter") != 0 {
		t.Errorf("a full sync starts over: nat %d filter %d", got, c.total("filter"))
	}
}
