package scale

import (
	"fmt"
	"strings"
	"time"
)

// syncResult is how long a freshly started proxy took to program every Service.
type syncResult struct {
	Kernel   time.Duration // process start until every Service is programmed (see waitSync)
	Probe    time.Duration // process start to the last-created Service answering
	PollCost time.Duration // how long one kernel dump took at the end
	Dumps    int           // dumps needed: 1 means the sampled Services answered last
	CPU      time.Duration // CPU of the proxy tree until then
}

// syncSample is how many Services, spread evenly over the creation order, are
// probed with packets during the initial sync.
const syncSample = 32

// waitSync waits until the first n Services are programmed. A dump of the nat table
// holding 10,000 Services takes tens of seconds on a busy machine and would compete
// with the proxy for the CPU, so it is not polled: a sample of Services (the last
// created among them) is probed with packets every few milliseconds until each has
// answered once, and then one dump confirms that every Service is there. If it is
// not, dumps continue every ~250 ms and the first complete one gives the time.
// probe is the last Service and want the pod it must answer from.
func (e *env) waitSync(p *proxyProc, n int, probe *service, want string) (syncResult, error) {
	var r syncResult
	ips := e.ipSet(n)
	deadline := p.started.Add(e.cfg.SyncTimeout)
	pending := map[*service]bool{probe: true}
	for i := 0; i < syncSample && i < n; i++ {
		pending[e.svcs[i*(n-1)/max(syncSample-1, 1)]] = true
	}
	lastLog := time.Now()
	var answered time.Time
	for len(pending) > 0 {
		for s := range pending {
			pr := e.prober.TCP(s.target(), 100*time.Millisecond)
			if pr.Err != nil || pr.Backend == "" || (s == probe && pr.Backend != want) {
				continue
			}
			delete(pending, s)
			if pr.At.After(answered) {
				answered = pr.At
			}
			if s == probe {
				r.Probe = pr.At.Sub(p.started)
			}
		}
		if err := p.alive(); err != nil {
			return r, err
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("bench: %s-%s: %d of the %d sampled Services still unanswered after %v", p.impl, p.mode, len(pending), syncSample, e.cfg.SyncTimeout)
		}
		if time.Since(lastLog) > 15*time.Second {
			e.cfg.logf("bench: %s-%s: %d sampled Services still unanswered after %v", p.impl, p.mode, len(pending), time.Since(p.started).Round(time.Second))
			lastLog = time.Now()
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.Kernel = answered.Sub(p.started)
	for {
		begin := time.Now()
		count, err := e.kernel.programmed(p.mode, ips)
		end := time.Now()
		r.Dumps++
		if err != nil {
			return r, fmt.Errorf("bench: reading node1's rules: %w", err)
		}
		if count >= n {
			r.PollCost = end.Sub(begin)
			if r.Dumps > 1 {
				r.Kernel = end.Sub(p.started)
			}
			break
		}
		if err := p.alive(); err != nil {
			return r, err
		}
		if end.After(deadline) {
			return r, fmt.Errorf("bench: %s-%s programmed %d of %d Services after %v", p.impl, p.mode, count, n, e.cfg.SyncTimeout)
		}
		e.cfg.logf("bench: %s-%s: %d of %d Services in the kernel after %v", p.impl, p.mode, count, n, end.Sub(p.started).Round(time.Millisecond))
		time.Sleep(250 * time.Millisecond)
	}
	cpu, err := p.cpu()
	if err != nil {
		return r, err
	}
	r.CPU = cpu
	return r, nil
}

// firstPacketResult is the median TCP connect time to the Service whose rule a
// linear walk reaches last.
type firstPacketResult struct {
	Median  time.Duration
	Target  string // which Service and where its rule sits
	Samples int
}

// firstPacket measures connects from pod-a1 to the Service last in the dispatch
// order (iptables) or the last one created (nftables: a map lookup has no order).
// Every connect is a new connection, so its SYN goes through the nat rules.
func (e *env) firstPacket(mode string, n int) (firstPacketResult, error) {
	var r firstPacketResult
	ips := e.ipSet(n)
	for attempt := 0; attempt < 3; attempt++ {
		target, desc, err := e.lastService(mode, n, ips)
		if err != nil {
			return r, err
		}
		for i := 0; i < 5; i++ { // warm the route and ARP caches
			e.prober.TCP(target.target(), time.Second)
		}
		var samples []time.Duration
		failures := 0
		for i := 0; i < e.cfg.FirstPacketConnects; i++ {
			pr := e.prober.TCP(target.target(), time.Second)
			if pr.Err != nil || pr.Backend == "" {
				failures++
				if failures > e.cfg.FirstPacketConnects/10 {
					if pr.Err != nil {
						return r, fmt.Errorf("bench: connects to %s (%s) fail: %w", target.Name, target.target(), pr.Err)
					}
					return r, fmt.Errorf("bench: connects to %s (%s) fail: no backend named", target.Name, target.target())
				}
				continue
			}
			samples = append(samples, pr.Connect)
			time.Sleep(2 * time.Millisecond)
		}
		// A resync may have reordered the rules meanwhile (upstream writes
		// KUBE-SERVICES in map order): measure again if the target moved.
		again, _, err := e.lastService(mode, n, ips)
		if err != nil {
			return r, err
		}
		if again != target && attempt < 2 {
			e.cfg.logf("bench: the last rule moved from %s to %s while measuring; again", target.Name, again.Name)
			continue
		}
		r = firstPacketResult{Median: median(samples), Target: desc, Samples: len(samples)}
		return r, nil
	}
	return r, nil
}

func (e *env) lastService(mode string, n int, ips map[string]bool) (*service, string, error) {
	// The probe Services' endpoints are pods (pod-b1 is a node away); every other
	// Service's endpoints are in the sink, so comparing those keeps the path equal.
	delete(ips, e.svcs[0].ClusterIP)
	delete(ips, e.svcs[n-1].ClusterIP)
	if mode == ModeNFTables {
		s := e.svcs[n-2]
		return s, s.Name + " (service-ips map)", nil
	}
	dump, err := e.kernel.exec("iptables-save", "-t", "nat")
	if err != nil {
		return nil, "", err
	}
	ip, chain, pos, length := lastDispatch(dump, ips)
	s := e.serviceByIP(ip)
	if s == nil {
		return nil, "", fmt.Errorf("bench: no cluster IP dispatch rule for the benchmark's Services in node1's nat table:\n%s",
			tail(strings.TrimSpace(dump), 20))
	}
	return s, fmt.Sprintf("%s (rule %d of %d in %s)", s.Name, pos, length, chain), nil
}
