package e2e

import (
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/yaml"

	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// sliceWithTrigger is the Service's EndpointSlice carrying the EndpointSlice
// controller's last-change-trigger-time annotation, which network programming latency
// is measured from.
func sliceWithTrigger(t *testing.T, svc cluster.Service, trigger time.Time, pods ...string) string {
	t.Helper()
	var s discoveryv1.EndpointSlice
	if err := yaml.Unmarshal([]byte(slice(svc, pods...).YAML()), &s); err != nil {
		t.Fatal(err)
	}
	s.Annotations = map[string]string{model.LastChangeTriggerTimeAnnotation: trigger.UTC().Format(time.RFC3339)}
	b, err := yaml.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testMetricsMove(t *testing.T, e *env) {
	e.dumpOnFailure(t, "metrics")
	svc := cluster.Service{Namespace: ns, Name: "metrics", ClusterIP: "10.96.0.50", Ports: []cluster.ServicePort{httpPort}}
	before := scrapeMetrics(t, e.c)
	// Timestamps are whole seconds: let one pass so a new sync must move them.
	time.Sleep(1100 * time.Millisecond)

	e.apply(t, svc)
	trigger := time.Now().Add(-2 * time.Second) // the "pod became ready" moment, in the past
	if err := e.c.WriteManifest("eps-metrics", sliceWithTrigger(t, svc, trigger, "pod-b1", "pod-b2")); err != nil {
		t.Fatal(err)
	}
	e.waitAnswer(t, "pod-a1", "tcp", "10.96.0.50:80", 5*time.Second)
	after := scrapeMetrics(t, e.c)

	fam := []string{"ip_family", "IPv4"}
	increased := func(name string, labels ...string) {
		t.Helper()
		b, _ := before.get(name, labels...)
		a, ok := after.get(name, labels...)
		if !ok {
			t.Errorf("%s%v is missing; samples with that prefix: %v", name, labels, after.names("kubeproxy_"))
			return
		}
		if a <= b {
			t.Errorf("%s%v did not increase: %v then %v", name, labels, b, a)
		} else {
			t.Logf("%s%v: %v -> %v", name, labels, b, a)
		}
	}
	increased("kubeproxy_sync_proxy_rules_duration_seconds_count", fam...)
	increased("kubeproxy_sync_proxy_rules_last_timestamp_seconds", fam...)
	increased("kubeproxy_sync_proxy_rules_endpoint_changes_total")
	increased("kubeproxy_sync_proxy_rules_service_changes_total")
	// The slice's trigger time was two seconds ago: the observation lands in a bucket
	// of 2 s or more, never in the 1 s one.
	increased("kubeproxy_network_programming_duration_seconds_count", fam...)
	increased("kubeproxy_network_programming_duration_seconds_bucket", "ip_family", "IPv4", "le", "300")
	b1, _ := before.get("kubeproxy_network_programming_duration_seconds_bucket", "ip_family", "IPv4", "le", "1")
	a1, _ := after.get("kubeproxy_network_programming_duration_seconds_bucket", "ip_family", "IPv4", "le", "1")
	if a1 != b1 {
		t.Errorf("network programming latency of a change triggered 2 s ago was observed under 1 s (bucket le=1: %v -> %v)", b1, a1)
	}
	if ts, _ := after.get("kubeproxy_sync_proxy_rules_last_timestamp_seconds", fam...); time.Since(time.Unix(int64(ts), 0)) > 10*time.Second {
		t.Errorf("last sync timestamp %v is not recent", ts)
	}
	for _, name := range []string{
		"kubeproxy_sync_proxy_rules_endpoint_changes_pending", "kubeproxy_sync_proxy_rules_service_changes_pending",
		"kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}",
	} {
		if _, ok := after[name]; !ok {
			t.Errorf("%s is missing", name)
		}
	}
	if _, ok := after.get("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", fam...); !ok {
		t.Error("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds is missing")
	}

	switch e.mode {
	case "iptables":
		b, _ := before.get("kubeproxy_sync_proxy_rules_iptables_total", "ip_family", "IPv4", "table", "nat")
		a, ok := after.get("kubeproxy_sync_proxy_rules_iptables_total", "ip_family", "IPv4", "table", "nat")
		// The new Service adds its KUBE-SERVICES, KUBE-SVC and two KUBE-SEP rules at least.
		if !ok || a < b+4 {
			t.Errorf("sync_proxy_rules_iptables_total{table=nat}: %v then %v (present %v), want at least 4 more rules", b, a, ok)
		}
		if _, ok := after.get("kubeproxy_sync_proxy_rules_iptables_total", "ip_family", "IPv4", "table", "filter"); !ok {
			t.Error("sync_proxy_rules_iptables_total{table=filter} is missing")
		}
		if v, ok := after.get("kubeproxy_sync_proxy_rules_iptables_last", "ip_family", "IPv4", "table", "nat"); !ok || v <= 0 {
			t.Errorf("sync_proxy_rules_iptables_last{table=nat} = %v (present %v)", v, ok)
		}
	case "nftables":
		for _, name := range []string{"kubeproxy_sync_proxy_rules_nftables_sync_failures_total", "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total"} {
			if v, ok := after.get(name, fam...); !ok || v != 0 {
				t.Errorf("%s{IPv4} = %v (present %v), want present and 0 on a healthy node", name, v, ok)
			}
		}
	}
	// The health endpoints count their answers.
	if code, body, err := node1HTTP(e.c, "http://127.0.0.1:10256/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz: %d %v %s", code, err, body)
	}
	final := scrapeMetrics(t, e.c)
	if v, ok := final.get("kubeproxy_proxy_healthz_total", "code", "200"); !ok || v < 1 {
		t.Errorf("kubeproxy_proxy_healthz_total{code=200} = %v (present %v) after a 200", v, ok)
	}
}
