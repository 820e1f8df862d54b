package e2e

import (
	"strings"
	"testing"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// ipvsDump is node1's IPVS table, kube-ipvs0's addresses and ipsets, for failures.
func ipvsDump(e *env) string {
	var b strings.Builder
	for _, cmd := range [][]string{{"ipvsadm", "-Ln"}, {"ip", "-o", "addr", "show", "dev", "kube-ipvs0"}, {"ipset", "list"}} {
		out, err := e.c.Exec(cluster.KproxyNode, cmd...)
		if err != nil {
			out += err.Error()
		}
		b.WriteString("$ " + strings.Join(cmd, " ") + "\n" + out)
	}
	return b.String()
}

// skipInIPVS skips a case that depends on semantics IPVS mode cannot carry; why names
// the limitation (docs/ipvs.md lists them all).
func skipInIPVS(t *testing.T, e *env, why string) {
	t.Helper()
	if e.mode == "ipvs" {
		t.Skipf("not applicable in ipvs mode: %s", why)
	}
}
