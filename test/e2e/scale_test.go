package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// manyServicesCount is enough Service addresses for the iptables backend to leave
// upstream's flat KUBE-SERVICES for its dispatch tree (more than 64 addresses).
const manyServicesCount = 300

// testManyServices writes 300 Services in one file and checks with real packets that
// the first, a middle and the last one reach their endpoints: in iptables mode through
// the dispatch tree, which the ruleset must show, and the trace must follow.
func testManyServices(t *testing.T, e *env) {
	e.requireRunning(t)
	var docs []string
	svcs := make([]cluster.Service, manyServicesCount)
	for i := range svcs {
		svcs[i] = cluster.Service{Namespace: ns, Name: fmt.Sprintf("many-%03d", i),
			ClusterIP: fmt.Sprintf("10.96.%d.%d", 100+i/200, 1+i%200), Ports: []cluster.ServicePort{httpPort}}
		pod := allPods[i%len(allPods)]
		docs = append(docs, svcs[i].YAML(), slice(svcs[i], pod).YAML())
	}
	start := time.Now()
	if err := e.c.WriteManifest("many", cluster.Documents(docs...)); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{manyServicesCount - 1, 0, manyServicesCount / 2} {
		target := hostPort(svcs[i].ClusterIP, 80)
		e.waitAnswer(t, "pod-a1", "tcp", target, firstSync)
		want := allPods[i%len(allPods)]
		requireBackends(t, svcs[i].Name, e.c.Request("pod-a1", "tcp", target, 5), want)
	}
	t.Logf("%d Services answering %v after the file was written", manyServicesCount, time.Since(start))
	if e.mode == "iptables" {
		dump := e.c.IPTablesSave(cluster.KproxyNode)
		if !strings.Contains(dump, "-j KUBE-SVCT-R") || strings.Contains(dump, `-A KUBE-SERVICES -d 10.96.100.1/32`) {
			t.Errorf("with %d Services the ClusterIP rules should sit in the dispatch tree, not in KUBE-SERVICES:\n%s",
				manyServicesCount, cluster.RulesMatching(dump, "KUBE-SERVICES"))
		}
	}
	// Removing them all leaves the earlier Services working.
	if err := e.c.RemoveManifest("many"); err != nil {
		t.Fatal(err)
	}
	if err := e.c.WaitFor(func() error {
		if r := e.c.Request("pod-a1", "tcp", hostPort(svcs[0].ClusterIP, 80), 1, cluster.Timeout(300*time.Millisecond)); r[0].Error == "" {
			return fmt.Errorf("%s still answers", svcs[0].Name)
		}
		return nil
	}, firstSync); err != nil {
		t.Error(err)
	}
	requireAll(t, "web after removing many Services", e.c.Request("pod-a1", "tcp", hostPort(webSvc.ClusterIP, 80), 10))
}
