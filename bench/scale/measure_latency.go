package scale

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// latencyResult is network programming latency: from the API server acknowledging
// an EndpointSlice update to the first connection answered by the new endpoint.
type latencyResult struct {
	P50, P99, Max time.Duration
	Samples       []time.Duration
	Timeouts      int // changes counted as latencyTimeout because they never showed
}

const latencyTimeout = 30 * time.Second

// programmingLatency changes the first probe Service's single endpoint to a fresh
// sink address LatencyChanges times. A connect every ~5 ms detects the change: the
// answer names the endpoint that served it, so there is no doubt which rules the
// SYN met. Changes are spaced by more than the min sync period, so each one is
// synced on its own and none waits for the rate limit.
func (e *env) programmingLatency(p *proxyProc) (latencyResult, error) {
	var r latencyResult
	svc := e.svcs[0]
	for i := 0; i < e.cfg.LatencyChanges; i++ {
		addr := e.nextMarker()
		lat, err := e.changeAndWait(svc, []discoveryv1.Endpoint{endpointAt(addr, "node2")}, "sink-"+addr, latencyTimeout)
		if err != nil {
			if aerr := p.alive(); aerr != nil {
				return r, aerr
			}
			// A change not programmed within the timeout counts as the timeout (a
			// lower bound); after a few the proxy is hopelessly behind.
			r.Timeouts++
			e.cfg.logf("bench: %s-%s: change %d: %v", p.impl, p.mode, i, err)
			if r.Timeouts >= 3 {
				return r, fmt.Errorf("bench: %d changes not programmed within %v", r.Timeouts, latencyTimeout)
			}
			lat = latencyTimeout
		}
		r.Samples = append(r.Samples, lat)
		gap := e.cfg.MinSyncPeriod + 50*time.Millisecond + rand.N(50*time.Millisecond)
		time.Sleep(gap)
	}
	// Back to the real pod for the burst's unchanged-Service client and later runs.
	if _, err := e.changeAndWait(svc, []discoveryv1.Endpoint{podEndpoint(firstProbePod)}, firstProbePod, 2*time.Minute); err != nil {
		return r, fmt.Errorf("bench: restoring %s: %w", svc.Name, err)
	}
	r.P50, r.P99, r.Max = percentile(r.Samples, 50), percentile(r.Samples, 99), percentile(r.Samples, 100)
	return r, nil
}

// changeAndWait updates svc's endpoints and polls until a connection is answered by
// want; it returns the time from the acknowledgement to the start of that
// connection.
func (e *env) changeAndWait(svc *service, eps []discoveryv1.Endpoint, want string, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	acked, err := svc.setEndpoints(ctx, e.client, eps)
	cancel()
	if err != nil {
		return 0, err
	}
	var last probe
	for {
		last = e.prober.TCP(svc.target(), 200*time.Millisecond)
		if last.Err == nil && last.Backend == want {
			return max(last.At.Sub(acked), 0), nil
		}
		if time.Since(acked) > timeout {
			if last.Err != nil {
				return 0, fmt.Errorf("%s still not answering from %s %v after the update (last: %w)", svc.Name, want, timeout, last.Err)
			}
			return 0, fmt.Errorf("%s still not answering from %s %v after the update (last: %q)", svc.Name, want, timeout, last.Backend)
		}
		time.Sleep(time.Until(last.At.Add(5 * time.Millisecond)))
	}
}
