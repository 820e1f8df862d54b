package e2e

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// flushRecoveryLimit is the promise: rules are back within a second of a flush.
const flushRecoveryLimit = time.Second

// stampedReply is one answer of a running client, with the time it arrived.
type stampedReply struct {
	cluster.Reply
	at time.Time
}

// flushClient runs echoserver client in a namespace, one request every interval,
// and stamps each answer as it arrives (the client prints one JSON line per request).
type flushClient struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	replies []stampedReply
	done    chan struct{}
}

func startFlushClient(t *testing.T, c *cluster.Cluster, from, proto, target string, count int, interval, timeout time.Duration) *flushClient {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", c.NS(from), echoBin, "client", "--proto", proto, "--target", target,
		"--count", strconv.Itoa(count), "--interval", interval.String(), "--timeout", timeout.String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &flushClient{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var r cluster.Reply
			if json.Unmarshal(sc.Bytes(), &r) != nil {
				continue
			}
			l.mu.Lock()
			l.replies = append(l.replies, stampedReply{Reply: r, at: time.Now()})
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return l
}

func (l *flushClient) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.replies)
}

func (l *flushClient) wait(timeout time.Duration) []stampedReply {
	select {
	case <-l.done:
	case <-time.After(timeout):
		_ = l.cmd.Process.Kill()
		<-l.done
	}
	_ = l.cmd.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]stampedReply(nil), l.replies...)
}

// flushOutage measures the gap around the first failure after flushedAt: from the last
// answer before it to the first answer after it (so at least one interval even when
// nothing failed), and how many requests failed.
func flushOutage(replies []stampedReply, flushedAt time.Time) (gap time.Duration, failed int, recovered bool) {
	lastOK := flushedAt
	for _, r := range replies {
		if r.at.Before(flushedAt) {
			if r.Error == "" {
				lastOK = r.at
			}
			continue
		}
		if r.Error == "" {
			if failed == 0 {
				lastOK = r.at
				continue
			}
			return r.at.Sub(lastOK), failed, true
		}
		failed++
	}
	return time.Since(lastOK), failed, failed == 0
}

// flushVariants are the ways a node's rules get wiped, per mode.
func flushVariants(mode string) []struct{ name, script string } {
	if mode == "nftables" {
		return []struct{ name, script string }{
			{"nft-flush-ruleset", "nft flush ruleset"},
		}
	}
	return []struct{ name, script string }{
		{"iptables-F", "iptables -F; iptables -t nat -F; iptables -t mangle -F"},
		// A firewall reload: every rule flushed and every chain deleted.
		{"iptables-F-X", "for t in filter nat mangle; do iptables -t $t -F; iptables -t $t -X; done"},
		{"nft-flush-ruleset", "nft flush ruleset"},
	}
}

func testFlushRecovery(t *testing.T, e *env) {
	e.dumpOnFailure(t, "flush")
	svc := cluster.Service{Namespace: ns, Name: "flush", ClusterIP: "10.96.0.70", Ports: []cluster.ServicePort{httpPort}}
	e.apply(t, svc, "pod-b1", "pod-b2")
	target := hostPort(svc.ClusterIP, 80)
	e.waitAnswer(t, "pod-a1", "tcp", target, 5*time.Second)
	for _, v := range flushVariants(e.mode) {
		t.Run(v.name, func(t *testing.T) {
			e.requireRunning(t)
			// Let kproxy settle (no sync in flight), as on a quiet node.
			time.Sleep(300 * time.Millisecond)
			const interval = 20 * time.Millisecond
			loop := startFlushClient(t, e.c, "pod-a1", "tcp", target, 250, interval, 300*time.Millisecond)
			for loop.count() < 20 {
				time.Sleep(10 * time.Millisecond)
			}
			flushedAt := time.Now()
			if out, err := e.c.Exec(cluster.KproxyNode, "sh", "-c", v.script); err != nil {
				t.Fatalf("flush: %v\n%s", err, out)
			}
			flushTook := time.Since(flushedAt)
			// A request right after the flush must fail, or the flush did not bite.
			probe := e.c.Request("pod-a1", "tcp", target, 1, cluster.Timeout(300*time.Millisecond))[0]
			replies := loop.wait(15 * time.Second)
			gap, failed, recovered := flushOutage(replies, flushedAt)
			t.Logf("FLUSH_RECOVERY mode=%s flush=%q gap=%v failed_requests=%d requests=%d flush_cmd_took=%v",
				e.mode, v.name, gap.Round(time.Millisecond), failed, len(replies), flushTook.Round(time.Millisecond))
			if !recovered {
				t.Fatalf("traffic did not come back after %q: %d of %d requests after the flush failed; errors %v",
					v.name, failed, len(replies), stampedErrors(replies))
			}
			if failed == 0 && probe.Error == "" {
				t.Logf("no request failed: kproxy restored the rules between two requests (probe answered by %s)", probe.Backend)
			}
			if gap >= flushRecoveryLimit {
				t.Errorf("outage after %q was %v, want under %v", v.name, gap, flushRecoveryLimit)
			}
			// Whatever the kernel lost, everything is back: the Service answers from
			// every backend.
			requireBackends(t, "after the flush", e.c.Request("pod-a1", "tcp", target, 20), "pod-b1", "pod-b2")
			if !strings.Contains(e.proxy.Logs(), "Rules restored after a flush") {
				t.Error("kproxy did not log the restoration")
			}
		})
	}
}

func stampedErrors(replies []stampedReply) map[string]int {
	m := map[string]int{}
	for _, r := range replies {
		if r.Error != "" {
			m[r.Error]++
		}
	}
	return m
}
