package ipvs

import (
	"net/netip"
	"sync"

	libipvs "github.com/moby/ipvs"
	"k8s.io/klog/v2"
)

// graceful removes real servers the way upstream's graceful termination manager does:
// a TCP real server that still has connections is set to weight 0, so it gets no new
// ones, and is deleted once its active and inactive connection counts reach zero.
// UDP and SCTP real servers are deleted at once: with expire_nodest_conn=1 the
// kernel drops their flows' next packet and reschedules the flow.
type graceful struct {
	mu      sync.Mutex
	pending map[gracefulKey]*libipvs.Service
}

type gracefulKey struct {
	vs   VSKey
	dest netip.AddrPort
}

func newGraceful() *graceful { return &graceful{pending: map[gracefulKey]*libipvs.Service{}} }

// remove starts removing a real server.
func (g *graceful) remove(logger klog.Logger, h Handle, svc *libipvs.Service, key VSKey, d *libipvs.Destination) error {
	ap := destAddr(d)
	if !needsDrain(svc, d) {
		g.forget(key, ap)
		return h.DelDestination(svc, d)
	}
	if d.Weight != 0 {
		if err := h.UpdateDestination(svc, toDestination(ap, 0)); err != nil {
			return err
		}
		logger.V(2).Info("Draining IPVS real server", "vs", key, "realServer", ap, "activeConn", d.ActiveConnections, "inactiveConn", d.InactiveConnections)
	}
	g.mu.Lock()
	g.pending[gracefulKey{key, ap}] = svc
	g.mu.Unlock()
	return nil
}

func needsDrain(svc *libipvs.Service, d *libipvs.Destination) bool {
	return protoName(svc.Protocol) == "TCP" && d.ActiveConnections+d.InactiveConnections > 0
}

// forget drops a real server from the queue: it is wanted again, or gone.
func (g *graceful) forget(key VSKey, ap netip.AddrPort) {
	g.mu.Lock()
	delete(g.pending, gracefulKey{key, ap})
	g.mu.Unlock()
}

func (g *graceful) forgetService(key VSKey) {
	g.mu.Lock()
	for k := range g.pending {
		if k.vs == key {
			delete(g.pending, k)
		}
	}
	g.mu.Unlock()
}

// Len is the number of real servers still draining.
func (g *graceful) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.pending)
}

// process deletes the draining real servers whose connections are gone. The caller
// holds the lock that serialises use of h.
func (g *graceful) process(logger klog.Logger, h Handle) {
	g.mu.Lock()
	work := make(map[gracefulKey]*libipvs.Service, len(g.pending))
	for k, v := range g.pending {
		work[k] = v
	}
	g.mu.Unlock()
	for k, svc := range work {
		dests, err := h.GetDestinations(svc)
		if err != nil {
			// The virtual server is gone, and its real servers with it.
			g.forget(k.vs, k.dest)
			continue
		}
		var found *libipvs.Destination
		for _, d := range dests {
			if destAddr(d) == k.dest {
				found = d
			}
		}
		switch {
		case found == nil || found.Weight > 0:
			g.forget(k.vs, k.dest)
		case !needsDrain(svc, found):
			if err := h.DelDestination(svc, found); err != nil {
				logger.Error(err, "Deleting drained IPVS real server failed", "vs", k.vs, "realServer", k.dest)
				continue
			}
			logger.V(2).Info("Deleted drained IPVS real server", "vs", k.vs, "realServer", k.dest)
			g.forget(k.vs, k.dest)
		}
	}
}
