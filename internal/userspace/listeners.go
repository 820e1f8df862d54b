package userspace

import (
	"errors"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// listener is one relaying socket, TCP or UDP.
type listener interface {
	setRoute(r *route)
	// pruneFlows ends UDP flows to endpoints that left the Service.
	pruneFlows()
	stop()
}

// listenerManager turns plans into running listeners and balancers: it starts what a
// plan adds, stops what it drops, and updates the rest in place, so a connection in
// progress survives every change that keeps its listener.
type listenerManager struct {
	env       *relayEnv
	listeners map[listenerKey]listener
	balancers map[model.ServicePortName]*balancer
}

func newListenerManager(env *relayEnv) *listenerManager {
	return &listenerManager{env: env, listeners: map[listenerKey]listener{}, balancers: map[model.ServicePortName]*balancer{}}
}

// apply makes the running state match p. Listeners that cannot start are reported
// (joined) and retried at the next apply; everything else is applied regardless. The
// listeners it starts log to logger.
func (m *listenerManager) apply(logger klog.Logger, p *plan) error {
	changed := map[model.ServicePortName]bool{}
	for name, sets := range p.balancers {
		b, ok := m.balancers[name]
		if !ok {
			b = newBalancer(m.env.clock)
			m.balancers[name] = b
		}
		if b.update(sets.cluster, sets.local, sets.sticky) {
			changed[name] = true
		}
	}
	for k, l := range m.listeners {
		if _, keep := p.listeners[k]; !keep {
			l.stop()
			delete(m.listeners, k)
			logger.V(2).Info("Stopped listener", "listener", k)
		}
	}
	var errs []error
	for k, spec := range p.listeners {
		r := &route{spec: spec, bal: m.balancers[spec.service]}
		if l, ok := m.listeners[k]; ok {
			l.setRoute(r)
			if changed[spec.service] {
				l.pruneFlows()
			}
			continue
		}
		l, err := m.start(logger, k, r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.listeners[k] = l
		logger.V(2).Info("Started listener", "listener", k, "servicePort", spec.service)
	}
	for name := range m.balancers {
		if _, keep := p.balancers[name]; !keep {
			delete(m.balancers, name)
		}
	}
	return errors.Join(errs...)
}

func (m *listenerManager) start(logger klog.Logger, k listenerKey, r *route) (listener, error) {
	if k.proto == v1.ProtocolUDP {
		return startUDP(logger, k, m.env, r)
	}
	return startTCP(logger, k, m.env, r)
}

// stopAll stops every listener (tests, and shutdown of a test proxier).
func (m *listenerManager) stopAll() {
	for k, l := range m.listeners {
		l.stop()
		delete(m.listeners, k)
	}
}
