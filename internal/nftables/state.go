package nftables

import (
	"cmp"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/model"
)

// nodeOwner owns the elements that come from the node rather than from a Service
// (nodeport-ips); the zero ServicePortName sorts before every real one.
var nodeOwner = model.ServicePortName{}

// ownedElement is one owner's wish for an element: the element in the owner's
// portObjects, which is never changed once built (a change replaces it, after its
// elements were disowned), so pointing into it costs 16 bytes instead of a copy of
// the element and of the owner's name.
type ownedElement struct {
	owner *portObjects
	el    *element
}

// owners is every owner that wants one element. There is almost always one, held
// inline; more is for the rest (two ports of one ClusterIP, two Services of one pod).
type owners struct {
	first ownedElement
	more  []ownedElement
}

// state is what the kernel holds after the last successful sync: the Proxier keeps it
// so the next partial sync can emit exactly what changed and delete exactly what is gone.
type state struct {
	nodePortAll bool
	// detector is the local-traffic detector the rules were built with; with
	// detect-local mode NodeCIDR it follows the Node, and a change rebuilds them.
	detector LocalDetector

	ports     map[model.ServicePortName]*portObjects
	byService map[types.NamespacedName][]model.ServicePortName
	// wanted holds, per element, every owner that wants it: ServicePorts may share an
	// element (two ports of one ClusterIP, two Services of one pod); it stays while one
	// owner wants it. When owners disagree on a map value the lowest owner wins, so the
	// result does not depend on sync order.
	//
	// What the kernel holds is not recorded apart: after a successful sync it is, for
	// every ID, the winner among its owners (a sync captures the winners of the IDs it
	// touches before changing them, see txBuilder.touch). A copy would cost 30 MiB at
	// ten thousand Services x 10 endpoints.
	wanted map[elementID]owners
	// node holds the elements nodeOwner wants (nodeport-ips).
	node *portObjects
	// pendingDelete holds chains that were flushed and are no longer referenced, with
	// the time they became unused: they are deleted by a later transaction, because
	// kernels before 6.2 keep a dropped verdict-map reference until the commit ends.
	pendingDelete map[string]time.Time
}

// noLocalEndpoints counts the ports whose internal / external Local policy finds no
// local endpoint, as upstream's sync_proxy_rules_no_local_endpoints_total does.
func (s *state) noLocalEndpoints() (internal, external int) {
	for _, o := range s.ports {
		if o.noLocalInternal {
			internal++
		}
		if o.noLocalExternal {
			external++
		}
	}
	return internal, external
}

func newState(p *Params) *state {
	return &state{
		nodePortAll:   p.NodePortAll,
		detector:      p.LocalDetector,
		ports:         map[model.ServicePortName]*portObjects{},
		byService:     map[types.NamespacedName][]model.ServicePortName{},
		wanted:        map[elementID]owners{},
		pendingDelete: map[string]time.Time{},
	}
}

// ownerLess orders ServicePorts by namespace, name, port name and protocol: any fixed
// order does, and comparing fields allocates nothing (String would, per comparison).
func ownerLess(a, b model.ServicePortName) bool {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
		cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol)) < 0
}

// own records that o wants el (an element of o.elements), whose ID is id.
func (s *state) own(id elementID, o *portObjects, el *element) {
	w, ok := s.wanted[id]
	if !ok {
		s.wanted[id] = owners{first: ownedElement{owner: o, el: el}}
		return
	}
	w.more = append(w.more, ownedElement{owner: o, el: el})
	s.wanted[id] = w
}

// disown records that the owner named owner no longer wants the element id.
func (s *state) disown(id elementID, owner model.ServicePortName) {
	w, ok := s.wanted[id]
	if !ok {
		return
	}
	switch {
	case w.first.owner.name == owner && len(w.more) == 0:
		delete(s.wanted, id)
		return
	case w.first.owner.name == owner:
		w.first, w.more = w.more[0], w.more[1:]
	default:
		for i := range w.more {
			if w.more[i].owner.name == owner {
				w.more = append(w.more[:i:i], w.more[i+1:]...)
				break
			}
		}
	}
	if len(w.more) == 0 {
		w.more = nil
	}
	s.wanted[id] = w
}

// winner is the element the kernel should hold for id, if any owner wants it.
func (s *state) winner(id elementID) (element, bool) {
	w, ok := s.wanted[id]
	if !ok {
		return element{}, false
	}
	best := w.first
	for _, o := range w.more {
		if ownerLess(o.owner.name, best.owner.name) {
			best = o
		}
	}
	return *best.el, true
}

// affinityTimeouts maps every affinity set the state's ServicePorts hold to its timeout.
func (s *state) affinityTimeouts() map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, o := range s.ports {
		for name, t := range o.affinity {
			out[name] = t
		}
	}
	return out
}
