package e2e

import (
	"strings"

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
