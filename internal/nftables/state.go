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

// ownedElement is one owner's wish for an element.
type ownedElement struct {
	owner model.ServicePortName
	el    element
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
	wanted map[elementID][]ownedElement
	// kernel holds the elements the kernel holds.
	kernel map[elementID]element
	// nodeElements are the elements nodeOwner wants (nodeport-ips).
	nodeElements []element
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
		wanted:        map[elementID][]ownedElement{},
		kernel:        map[elementID]element{},
		pendingDelete: map[string]time.Time{},
	}
}

// ownerLess orders ServicePorts by namespace, name, port name and protocol: any fixed
// order does, and comparing fields allocates nothing (String would, per comparison).
func ownerLess(a, b model.ServicePortName) bool {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
		cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol)) < 0
}

func (s *state) own(owner model.ServicePortName, el element) elementID {
	id := el.id()
	s.wanted[id] = append(s.wanted[id], ownedElement{owner: owner, el: el})
	return id
}

func (s *state) disown(owner model.ServicePortName, el *element) elementID {
	id := el.id()
	owners := s.wanted[id]
	for i := range owners {
		if owners[i].owner == owner {
			owners = append(owners[:i], owners[i+1:]...)
			break
		}
	}
	if len(owners) == 0 {
		delete(s.wanted, id)
	} else {
		s.wanted[id] = owners
	}
	return id
}

// winner is the element the kernel should hold for id, if any owner wants it.
func (s *state) winner(id elementID) (element, bool) {
	owners := s.wanted[id]
	if len(owners) == 0 {
		return element{}, false
	}
	best := 0
	for i := 1; i < len(owners); i++ {
		if ownerLess(owners[i].owner, owners[best].owner) {
			best = i
		}
	}
	return owners[best].el, true
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
