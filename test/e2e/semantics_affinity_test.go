package e2e

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// testAffinityTimeout: sessionAffinity ClientIP with timeoutSeconds 3: a client sticks
// to one backend while it keeps talking within the window, and after a silence longer
// than the timeout it is balanced afresh (over several expiries it reaches more than
// one backend).
func testAffinityTimeout(t *testing.T, e *env) {
	timeout := int32(3)
	s := svc("aff", "ClusterIP", "10.96.1.50", svcPorts(0, 0), func(s *v1.Service) {
		s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: &timeout}}
	})
	e.putV4(t, s, readyEps(allPods...))
	target := "10.96.1.50:80"
	e.waitAnswer(t, "pod-a1", "tcp", target, settle)
	seen := map[string]bool{}
	for round := 0; round < 8 && len(seen) < 2; round++ {
		if round > 0 {
			time.Sleep(time.Duration(timeout)*time.Second + 700*time.Millisecond) // let the affinity expire
		}
		// Within the window: 4 requests over ~1.5 s (each refreshes the entry).
		replies := e.c.Request("pod-a1", "tcp", target, 4, cluster.Interval(500*time.Millisecond))
		requireAll(t, "pod-a1 -> aff", replies)
		got := cluster.Spread(replies)
		if len(got) != 1 {
			t.Fatalf("round %d: pod-a1 -> aff within the affinity window spread over %v, want one backend", round, got)
		}
		for b := range got {
			seen[b] = true
		}
	}
	if len(seen) < 2 {
		t.Errorf("pod-a1 -> aff: always %v after 7 affinity expiries; the %ds timeout is not honoured", seen, timeout)
	}
	t.Logf("backends over the rounds: %v", seen)
}
