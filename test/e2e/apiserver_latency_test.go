package e2e

import (
	"fmt"
	"sort"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// latencyUpdates is how many EndpointSlice updates the measurement makes.
const latencyUpdates = 50

// testProgrammingLatency measures network programming latency through the API: from
// the moment the API server acknowledges an EndpointSlice update (the Update call
// returns) to the first connection answered by the new endpoint. Each update
// replaces the slice's single endpoint, so the first answer from the new pod means
// the new rules are in the kernel.
func (a *apiEnv) testProgrammingLatency(t *testing.T) {
	a.dumpOnFailure(t, "latency")
	svc := createService(t, a.client, newService("latency", v1.ServiceTypeClusterIP, apiHTTP...))
	target := hostPort(svc.Spec.ClusterIP, 80)
	cur := putSlice(t, a.client, newSlice("latency", "latency-1", apiHTTP, "pod-b1"))
	waitBackends(t, a.pod, "initial endpoint", target, apiPropagation, "pod-b1")

	order := []string{"pod-b2", "pod-a1", "pod-a2", "pod-b1"}
	slices := a.client.DiscoveryV1().EndpointSlices(ns)
	var lat []time.Duration
	for i := 0; i < latencyUpdates; i++ {
		want := order[i%len(order)]
		next := cur.DeepCopy()
		next.Endpoints = podEndpoints(want)
		ctx, cancel := apiCtx()
		updated, err := slices.Update(ctx, next, metav1.UpdateOptions{})
		cancel()
		acked := time.Now()
		if err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
		cur = updated
		var last probe
		for {
			last = a.pod.TCP(target, 200*time.Millisecond)
			if last.Backend == want {
				break
			}
			if time.Since(acked) > 10*time.Second {
				t.Fatalf("update %d: %s still not answering after 10s (last: backend %q error %q)", i, want, last.Backend, last.Error)
			}
		}
		lat = append(lat, time.Since(acked))
	}
	sorted := append([]time.Duration(nil), lat...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	p50 := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		p50 = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	p90 := sorted[(len(sorted)*9)/10]
	t.Logf("PROGRAMMING_LATENCY p50=%s max=%s p90=%s min=%s n=%d min_sync_period=100ms",
		ms(p50), ms(sorted[len(sorted)-1]), ms(p90), ms(sorted[0]), len(sorted))
	t.Logf("all latencies in update order: %v", roundAll(lat))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

func roundAll(ds []time.Duration) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = ms(d)
	}
	return out
}
