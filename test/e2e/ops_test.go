package e2e

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// opsSyncPeriod is kproxy's --iptables-sync-period in TestOperability (it also drives
// nftables mode): short, so the health timeout (2 x syncPeriod) and the retries of
// failed syncs fit in a test.
const opsSyncPeriod = 2 * time.Second

// TestOperability checks what an operator relies on, in every mode: that "kproxy
// trace" agrees with real packets, that /metrics moves, that /healthz reports a stuck
// sync loop, that flushed rules come back within a second, that NodePorts are
// reserved, and that kproxy removes an upstream kube-proxy's rules. Each mode gets its
// own cluster; the cases that stop kproxy come last.
func TestOperability(t *testing.T) {
	requireKproxy(t)
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) { runOpsCases(t, mode) })
	}
}

func runOpsCases(t *testing.T, mode string) {
	c := newCluster(t)
	e := &env{c: c, mode: mode}
	if err := c.WriteManifest("nodes", nodesYAML()); err != nil {
		t.Fatal(err)
	}
	e.startProxy(t, opsFlags()...)
	t.Cleanup(func() {
		if e.proxy != nil {
			e.proxy.Kill()
		}
	})
	// The cases talk to kproxy's HTTP servers: wait until they answer.
	err := c.WaitFor(func() error {
		if code, body, err := node1HTTP(c, "http://127.0.0.1:10256/healthz"); err != nil || code != 200 {
			return errorf("/healthz: %d %v %s", code, err, body)
		}
		_, _, err := node1HTTP(c, "http://127.0.0.1:10249/metrics")
		return err
	}, firstSync)
	if err != nil {
		t.Fatalf("kproxy's servers: %v\n%s", err, tail(e.proxy.Logs(), 30))
	}
	cases := []struct {
		name string
		run  func(*testing.T, *env)
	}{
		{"TraceAgreesWithKernel", testTraceAgreesWithKernel},
		{"MetricsMove", testMetricsMove},
		{"NodePortReservation", testNodePortReservation},
		{"FlushRecovery", testFlushRecovery},
		{"HealthzStuckSync", testHealthzStuckSync},
		{"UpstreamLeftovers", testUpstreamLeftovers},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name != "UpstreamLeftovers" {
				e.requireRunning(t)
			}
			tc.run(t, e)
		})
	}
}

func opsFlags() []string {
	return []string{"--iptables-sync-period", opsSyncPeriod.String()}
}

// node1HTTP fetches a URL from inside node1 (kproxy's servers listen on its
// loopback) and returns the status code and body.
func node1HTTP(c *cluster.Cluster, url string) (int, string, error) {
	out, err := c.Exec(cluster.KproxyNode, "curl", "-s", "-m", "3", "-w", "\n%{http_code}", url)
	if err != nil {
		return 0, out, err
	}
	i := strings.LastIndex(out, "\n")
	code, cerr := strconv.Atoi(strings.TrimSpace(out[i+1:]))
	if cerr != nil {
		return 0, out, fmt.Errorf("curl %s: no status code in %q", url, out)
	}
	return code, out[:i], nil
}

// metricsDump is one scrape of /metrics: every sample by its name and labels.
type metricsDump map[string]float64

// scrape reads kproxy's /metrics in node1.
func scrapeMetrics(t *testing.T, c *cluster.Cluster) metricsDump {
	t.Helper()
	code, body, err := node1HTTP(c, "http://127.0.0.1:10249/metrics")
	if err != nil || code != 200 {
		t.Fatalf("scrape /metrics: code %d, %v\n%s", code, err, body)
	}
	return parseMetrics(body)
}

// parseMetrics reads the Prometheus text format: "name{labels} value" lines, the
// key being everything before the value.
func parseMetrics(body string) metricsDump {
	m := metricsDump{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndex(line, " ")
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m
}

// get returns the value of the sample "name{labels}" (labels as Prometheus prints
// them, sorted by name) and whether it exists.
func (m metricsDump) get(name string, labels ...string) (float64, bool) {
	key := name
	if len(labels) > 0 {
		var parts []string
		for i := 0; i+1 < len(labels); i += 2 {
			parts = append(parts, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
		}
		key += "{" + strings.Join(parts, ",") + "}"
	}
	v, ok := m[key]
	return v, ok
}

// names lists the sample keys that start with prefix, for failure messages.
func (m metricsDump) names(prefix string) []string {
	var out []string
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}
