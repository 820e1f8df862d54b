package scale

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// burstResult is how the proxy kept up with a stream of EndpointSlice updates.
type burstResult struct {
	Updates     int     // updates the API server acknowledged
	Rate        float64 // achieved updates per second
	Errors      int     // updates that failed
	Markers     int     // updates whose programming was timed
	MaxLag      time.Duration
	P50Lag      time.Duration
	P99Lag      time.Duration
	ClientConns int // connections to an unchanged Service meanwhile
	ClientFails int
	FirstFail   string
	Unseen      int // markers never programmed by the end; their lag counts until then
}

type markerUpdate struct {
	addr  string
	acked time.Time
}

type observation struct {
	at      time.Time
	backend string
}

// burst sends BurstRate EndpointSlice updates per second for BurstDuration. One in
// ten moves the last probe Service's single endpoint to a fresh sink address (a
// marker); the others replace one endpoint of a fake Service (the shape of a rolling
// update), round robin. A
// connect loop to the last probe Service sees which marker the kernel holds, so
// for each marker the lag is the time from its acknowledgement until the kernel
// held it or a later one. The proxy syncs all pending changes at once, so the
// markers' lag is the lag of the whole stream. Meanwhile a second loop connects to
// the first probe Service, which nothing changes, and counts failures.
func (e *env) burst(p *proxyProc) (burstResult, error) {
	var r burstResult
	n := len(e.svcs)
	marked, unchanged := e.svcs[n-1], e.svcs[0]
	client2, err := enterNS(e.c.NS("pod-a1"))
	if err != nil {
		return r, err
	}
	defer client2.Close()

	stopObs := make(chan struct{})
	var obsWG sync.WaitGroup
	var obs []observation
	obsWG.Add(2)
	go func() { // marker observer
		defer obsWG.Done()
		for {
			select {
			case <-stopObs:
				return
			default:
			}
			pr := e.prober.TCP(marked.target(), 200*time.Millisecond)
			if pr.Err == nil && strings.HasPrefix(pr.Backend, "sink-") {
				obs = append(obs, observation{pr.At, pr.Backend})
			}
			time.Sleep(time.Until(pr.At.Add(5 * time.Millisecond)))
		}
	}()
	go func() { // client of the unchanged Service
		defer obsWG.Done()
		for {
			select {
			case <-stopObs:
				return
			default:
			}
			pr := client2.TCP(unchanged.target(), time.Second)
			r.ClientConns++
			if pr.Err != nil || pr.Backend != firstProbePod {
				r.ClientFails++
				if r.FirstFail == "" {
					r.FirstFail = fmt.Sprintf("%s: backend %q error %v", pr.At.Format("15:04:05.000"), pr.Backend, pr.Err)
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.BurstDuration+time.Minute)
	defer cancel()
	markerRate := max(e.cfg.BurstRate/10, 1)
	fakeRate := e.cfg.BurstRate - markerRate
	var (
		acked, failed atomic.Int64
		markers       []markerUpdate
		wg            sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(e.cfg.BurstDuration)
	wg.Add(1)
	go func() { // markers, one at a time: they all touch one EndpointSlice
		defer wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(markerRate))
		defer tick.Stop()
		for now := range tick.C {
			if now.After(end) {
				return
			}
			addr := e.nextMarker()
			at, err := marked.setEndpoints(ctx, e.client, []discoveryv1.Endpoint{endpointAt(addr, "node2")})
			if err != nil {
				failed.Add(1)
				continue
			}
			acked.Add(1)
			markers = append(markers, markerUpdate{addr, at})
		}
	}()
	if fakeRate > 0 && n > 2 {
		jobs := make(chan *service, 64)
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for s := range jobs {
					addr := nthAddr(fakeBase, rand.N(fakeCount))
					if err := s.replaceOneEndpoint(ctx, e.client, addr); err != nil {
						failed.Add(1)
						continue
					}
					acked.Add(1)
				}
			}()
		}
		tick := time.NewTicker(time.Second / time.Duration(fakeRate))
		next := 0
		for now := range tick.C {
			if now.After(end) {
				break
			}
			jobs <- e.svcs[1+next%(n-2)]
			next++
		}
		tick.Stop()
		close(jobs)
	}
	wg.Wait()
	elapsed := time.Since(start)
	r.Updates, r.Errors = int(acked.Load()), int(failed.Load())
	r.Rate = float64(r.Updates) / elapsed.Seconds()
	r.Markers = len(markers)

	// Let the kernel catch up with the last marker, then stop looking.
	if len(markers) > 0 {
		last := "sink-" + markers[len(markers)-1].addr
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) {
			pr := e.prober.TCP(marked.target(), 200*time.Millisecond)
			if pr.Backend == last {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	close(stopObs)
	obsWG.Wait()
	if err := p.alive(); err != nil {
		return r, err
	}
	lags, unseen := markerLags(markers, obs, time.Now())
	r.Unseen = unseen
	r.MaxLag, r.P50Lag, r.P99Lag = percentile(lags, 100), percentile(lags, 50), percentile(lags, 99)
	return r, nil
}

// markerLags matches observations to markers. The kernel only moves forward, so an
// observation of marker j means every marker up to j is in (or superseded); marker
// i's lag runs from its acknowledgement to the first observation of a marker >= i.
// A watch event can reach the proxy before the client sees the acknowledgement, so
// negative lags count as zero. Markers never seen get the lag up to end (a lower
// bound) and are counted.
func markerLags(markers []markerUpdate, obs []observation, end time.Time) (lags []time.Duration, unseen int) {
	index := make(map[string]int, len(markers))
	for i, m := range markers {
		index["sink-"+m.addr] = i
	}
	sort.Slice(obs, func(a, b int) bool { return obs[a].at.Before(obs[b].at) })
	seen, o := -1, 0
	for i, m := range markers {
		for seen < i && o < len(obs) {
			if j, ok := index[obs[o].backend]; ok && j > seen {
				seen = j
			}
			o++
		}
		if seen < i {
			unseen++
			lags = append(lags, end.Sub(m.acked))
			continue
		}
		lags = append(lags, max(obs[o-1].at.Sub(m.acked), 0))
	}
	return lags, unseen
}
