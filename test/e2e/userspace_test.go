package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// userspace reports whether this run relays in kproxy itself (--proxy-mode userspace).
// Its semantics differ from the kernel modes in known ways (docs/userspace.md): an
// endpoint always sees node1's address toward it as the source, never the client's,
// and nothing is relayed while kproxy is not running.
func (e *env) userspace() bool { return e.mode == "userspace" }

// userspaceInterface is the interface that holds Service addresses in userspace mode.
const userspaceInterface = "kproxy0"

// requireRefusedWhileDead checks userspace mode with kproxy killed: the ClusterIP and
// NodePort of alloc, and web's ClusterIP, refuse every connection quickly.
func requireRefusedWhileDead(t *testing.T, e *env, cip string, np int) {
	t.Helper()
	checks := []struct{ from, target string }{
		{"pod-a1", hostPort(cip, 80)},
		{"ext", hostPort(cluster.Node1IP, np)},
		{"pod-a1", hostPort(webSvc.ClusterIP, 80)},
	}
	for _, ch := range checks {
		for _, r := range e.c.Request(ch.from, "tcp", ch.target, 5, cluster.Timeout(2*time.Second)) {
			if r.Error != "refused" || r.Ms > 500 {
				t.Errorf("%s -> %s with kproxy dead (userspace): got %+v, want refused at once", ch.from, ch.target, r)
			}
		}
	}
}

// requireNoUserspaceInterface fails if userspace mode's interface (with its Service
// addresses) is still on node1; every mode's --cleanup removes it.
func requireNoUserspaceInterface(t *testing.T, e *env) {
	t.Helper()
	if out, err := e.c.Exec(cluster.KproxyNode, "ip", "addr", "show", "dev", userspaceInterface); err == nil {
		t.Errorf("after --cleanup %s remains on %s:\n%s", userspaceInterface, cluster.KproxyNode, out)
	}
}

// userspaceDump is what a userspace-mode failure shows: the Service addresses and the
// sockets kproxy listens on.
func userspaceDump(e *env) string {
	addrs, err := e.c.Exec(cluster.KproxyNode, "ip", "addr", "show", "dev", userspaceInterface)
	if err != nil {
		addrs = err.Error()
	}
	socks, err := e.c.Exec(cluster.KproxyNode, "ss", "-ltnup")
	if err != nil {
		socks = err.Error()
	}
	return addrs + "\n" + socks
}

// requireNoNetfilterRules checks that userspace mode serves Services without a single
// iptables or nftables rule on node1: it is the mode for nodes without netfilter.
func requireNoNetfilterRules(t *testing.T, e *env) {
	t.Helper()
	if chains := cluster.KubeChains(e.c.IPTablesSave(cluster.KproxyNode)); len(chains) > 0 {
		t.Errorf("userspace mode created iptables chains: %v", chains)
	}
	// Removing other modes' leftovers may make iptables-nft create empty tables; what
	// must not exist is a Service rule.
	rs := e.c.NFTListRuleset(cluster.KproxyNode)
	for _, s := range []string{"kube-proxy", "KUBE-", "dnat", "masquerade"} {
		if strings.Contains(rs, s) {
			t.Errorf("userspace mode left nftables rules (%q):\n%s", s, rs)
			break
		}
	}
}
