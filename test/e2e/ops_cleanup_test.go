package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// upstreamJumps are the rules an upstream kube-proxy in iptables mode puts into the
// built-in chains (reference 2.1, with kubelet's KUBE-FIREWALL jumps) and its canaries.
const upstreamJumps = `*filter
:KUBE-PROXY-CANARY - [0:0]
-A INPUT -j KUBE-FIREWALL
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
COMMIT
*nat
:KUBE-PROXY-CANARY - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
COMMIT
*mangle
:KUBE-PROXY-CANARY - [0:0]
COMMIT
`

var nfacctMatch = regexp.MustCompile(`-m nfacct --nfacct-name \S+ `)

// loadUpstreamIPTables loads upstream kube-proxy's reference ruleset (reference 2.5,
// the fixture internal/iptables checks its output against; nfacct matches removed, as
// the kernel may lack xt_nfacct) and its jump rules into node1.
func loadUpstreamIPTables(t *testing.T, e *env) {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile(filepath.Join(root, "internal/trace/testdata/upstream-2.5.rules"))
	if err != nil {
		t.Fatal(err)
	}
	for i, input := range []string{nfacctMatch.ReplaceAllString(string(rules), ""), upstreamJumps} {
		f := filepath.Join(t.TempDir(), "upstream.rules")
		if err := os.WriteFile(f, []byte(input), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := e.c.Exec(cluster.KproxyNode, "iptables-restore", "--noflush", f); err != nil {
			t.Fatalf("loading upstream's iptables rules (part %d): %v\n%s", i+1, err, out)
		}
	}
	if dump := e.c.IPTablesSave(cluster.KproxyNode); !strings.Contains(dump, "KUBE-SVC-XPGD46QRK7WJZT7O") {
		t.Fatalf("upstream's rules did not load:\n%s", dump)
	}
}

// loadUpstreamNFTables loads upstream kube-proxy's nftables table (reference 3.3).
func loadUpstreamNFTables(t *testing.T, e *env) {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := e.c.Exec(cluster.KproxyNode, "nft", "-f", filepath.Join(root, "internal/trace/testdata/nft-reference.nft")); err != nil {
		t.Fatalf("loading upstream's nftables table: %v\n%s", err, out)
	}
	if rs := e.c.NFTListRuleset(cluster.KproxyNode); !strings.Contains(rs, "table ip kube-proxy") {
		t.Fatalf("upstream's table did not load:\n%s", rs)
	}
}

// requireNoIPTablesLeftovers fails if any KUBE-* chain or rule remains in iptables.
func requireNoIPTablesLeftovers(t *testing.T, e *env, when string) {
	t.Helper()
	dump := e.c.IPTablesSave(cluster.KproxyNode)
	if chains := cluster.KubeChains(dump); len(chains) > 0 {
		t.Errorf("%s these KUBE-* chains remain: %v", when, chains)
	}
	if strings.Contains(dump, "KUBE-") {
		t.Errorf("%s rules still mention KUBE-:\n%s", when, cluster.RulesMatching(dump, "KUBE-"))
	}
}

func requireNoNFTablesLeftovers(t *testing.T, e *env, when string) {
	t.Helper()
	if rs := e.c.NFTListRuleset(cluster.KproxyNode); strings.Contains(rs, "kube-proxy") {
		t.Errorf("%s the nftables table kube-proxy remains:\n%s", when, rs)
	}
}

// testUpstreamLeftovers checks that kproxy, started in this mode on a node where an
// upstream kube-proxy ran in the other mode, removes those rules; and that
// "kproxy --cleanup" removes an upstream kube-proxy's rules of both modes.
func testUpstreamLeftovers(t *testing.T, e *env) {
	e.dumpOnFailure(t, "left")
	if e.proxy != nil && e.proxy.Running() {
		if err := e.proxy.Stop(); err != nil {
			t.Errorf("kproxy on SIGTERM: %v", err)
		}
	}
	if out, err := e.c.RunKproxyCleanup(); err != nil {
		t.Fatalf("kproxy --cleanup: %v\n%s", err, out)
	}
	if e.mode == "iptables" {
		loadUpstreamNFTables(t, e)
	} else {
		loadUpstreamIPTables(t, e)
	}
	e.startProxy(t, opsFlags()...)
	svc := cluster.Service{Namespace: ns, Name: "left", ClusterIP: "10.96.0.90", Ports: []cluster.ServicePort{httpPort}}
	e.apply(t, svc, "pod-b1")
	e.waitAnswer(t, "pod-a1", "tcp", "10.96.0.90:80", firstSync)
	if e.mode == "iptables" {
		requireNoNFTablesLeftovers(t, e, "after kproxy started in iptables mode")
	} else {
		requireNoIPTablesLeftovers(t, e, "after kproxy started in nftables mode")
	}
	if err := e.proxy.Stop(); err != nil {
		t.Errorf("kproxy on SIGTERM: %v", err)
	}

	// An upstream kube-proxy's rules of both modes, on top of kproxy's own.
	loadUpstreamIPTables(t, e)
	loadUpstreamNFTables(t, e)
	start := time.Now()
	out, err := e.c.RunKproxyCleanup()
	if err != nil {
		t.Fatalf("kproxy --cleanup: %v\n%s", err, out)
	}
	t.Logf("kproxy --cleanup took %v", time.Since(start).Round(time.Millisecond))
	requireNoIPTablesLeftovers(t, e, "after --cleanup")
	requireNoNFTablesLeftovers(t, e, "after --cleanup")
	for _, r := range e.c.Request("pod-a1", "tcp", "10.96.0.90:80", 3, cluster.Timeout(500*time.Millisecond)) {
		if r.Error == "" {
			t.Errorf("Service still answers after --cleanup: %+v", r)
		}
	}
}
