package model

import (
	"maps"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// LastChangeTriggerTimeAnnotation is set by the EndpointSlice controller on the slices it
// writes; the time from it to the kernel is the network programming latency.
const LastChangeTriggerTimeAnnotation = "endpoints.kubernetes.io/last-change-trigger-time"

// Tracker is the Handler that sources feed. It keeps the raw objects, and on Snapshot
// recomputes the model only for the Services that changed since the previous Snapshot:
// a change to one Service costs work for that Service, not for all of them.
type Tracker struct {
	nodeName string
	// onChange is called (outside the lock) after every change, to wake the sync loop.
	onChange func()
	// report hears each object's problems (outside the lock); see reportOnce.
	report Reporter

	mu              sync.Mutex
	services        map[types.NamespacedName]*v1.Service
	sliceService    map[types.NamespacedName]types.NamespacedName // slice -> its Service
	slicesByService map[types.NamespacedName]map[string]*discovery.EndpointSlice
	node            *Node
	synced          bool
	dirty           map[types.NamespacedName]struct{}
	// reported holds the message last reported per object ("Kind ns/name"), so a
	// problem is reported when it appears or changes, not at every resync.
	reported        map[string]string
	nodeChanged     bool
	serviceChanges  int
	endpointChanges int
	triggerTimes    []time.Time

	// The computed model. Only Snapshot writes it, and only the sync loop calls Snapshot.
	ports     map[types.NamespacedName][]*ServicePort
	flatPorts map[ServicePortName]*ServicePort
	endpoints map[ServicePortName][]*Endpoint
	// endpointCount is the sum of len(endpoints), kept as ports are recomputed.
	endpointCount int
}

// NewTracker returns a Tracker for the node named nodeName; onChange may be nil.
// Problems with objects are logged, and passed to report when it is not nil.
func NewTracker(nodeName string, onChange func(), report Reporter) *Tracker {
	return &Tracker{
		nodeName:        nodeName,
		onChange:        onChange,
		report:          report,
		reported:        map[string]string{},
		services:        map[types.NamespacedName]*v1.Service{},
		sliceService:    map[types.NamespacedName]types.NamespacedName{},
		slicesByService: map[types.NamespacedName]map[string]*discovery.EndpointSlice{},
		dirty:           map[types.NamespacedName]struct{}{},
		ports:           map[types.NamespacedName][]*ServicePort{},
		flatPorts:       map[ServicePortName]*ServicePort{},
		endpoints:       map[ServicePortName][]*Endpoint{},
	}
}

// NodeName is the name of the node this tracker computes locality for.
func (t *Tracker) NodeName() string { return t.nodeName }

func (t *Tracker) changed(fn func()) {
	t.mu.Lock()
	fn()
	t.mu.Unlock()
	if t.onChange != nil {
		t.onChange()
	}
}

// OnServiceUpsert is part of Handler.
func (t *Tracker) OnServiceUpsert(svc *v1.Service) {
	problem := CheckService(svc)
	t.changed(func() {
		nn := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
		t.services[nn] = svc
		t.dirty[nn] = struct{}{}
		t.serviceChanges++
		problem = t.newProblemLocked("Service "+nn.String(), problem)
	})
	t.reportOnce(problem)
}

// OnServiceDelete is part of Handler.
func (t *Tracker) OnServiceDelete(namespace, name string) {
	t.changed(func() {
		nn := types.NamespacedName{Namespace: namespace, Name: name}
		delete(t.services, nn)
		t.dirty[nn] = struct{}{}
		t.serviceChanges++
		delete(t.reported, "Service "+nn.String())
	})
}

// OnEndpointSliceUpsert is part of Handler.
func (t *Tracker) OnEndpointSliceUpsert(slice *discovery.EndpointSlice) {
	problem := CheckEndpointSlice(slice)
	defer func() { t.reportOnce(problem) }()
	t.changed(func() {
		problem = t.newProblemLocked("EndpointSlice "+slice.Namespace+"/"+slice.Name, problem)
		sliceNN := types.NamespacedName{Namespace: slice.Namespace, Name: slice.Name}
		t.removeSliceLocked(sliceNN)
		svcName := slice.Labels[discovery.LabelServiceName]
		if svcName == "" {
			return
		}
		svcNN := types.NamespacedName{Namespace: slice.Namespace, Name: svcName}
		if t.slicesByService[svcNN] == nil {
			t.slicesByService[svcNN] = map[string]*discovery.EndpointSlice{}
		}
		t.slicesByService[svcNN][slice.Name] = slice
		t.sliceService[sliceNN] = svcNN
		t.dirty[svcNN] = struct{}{}
		t.endpointChanges++
		if ts, err := time.Parse(time.RFC3339, slice.Annotations[LastChangeTriggerTimeAnnotation]); err == nil {
			t.triggerTimes = append(t.triggerTimes, ts)
		}
	})
}

// OnEndpointSliceDelete is part of Handler.
func (t *Tracker) OnEndpointSliceDelete(namespace, name string) {
	t.changed(func() {
		t.removeSliceLocked(types.NamespacedName{Namespace: namespace, Name: name})
		t.endpointChanges++
		delete(t.reported, "EndpointSlice "+namespace+"/"+name)
	})
}

// newProblemLocked returns p if it is news for the object key (a problem it did not
// have, or another one), else nil; t.mu is held. An object without a problem forgets
// its old one, so the problem is reported again if it comes back.
func (t *Tracker) newProblemLocked(key string, p *Problem) *Problem {
	if p == nil {
		delete(t.reported, key)
		return nil
	}
	if t.reported[key] == p.Message {
		return nil
	}
	t.reported[key] = p.Message
	return p
}

// reportOnce logs a new problem and hands it to the reporter (an Event recorder).
// Resyncs and unrelated updates of the object do not repeat it.
func (t *Tracker) reportOnce(p *Problem) {
	if p == nil {
		return
	}
	klog.ErrorS(nil, "Cannot program part of an object", "kind", p.Object.Kind,
		"object", klog.KRef(p.Object.Namespace, p.Object.Name), "reason", p.Reason, "problem", p.Message)
	if t.report != nil {
		t.report(*p)
	}
}

func (t *Tracker) removeSliceLocked(sliceNN types.NamespacedName) {
	svcNN, ok := t.sliceService[sliceNN]
	if !ok {
		return
	}
	delete(t.sliceService, sliceNN)
	delete(t.slicesByService[svcNN], sliceNN.Name)
	if len(t.slicesByService[svcNN]) == 0 {
		delete(t.slicesByService, svcNN)
	}
	t.dirty[svcNN] = struct{}{}
}

// OnNodeUpsert is part of Handler. Objects for other nodes are ignored.
func (t *Tracker) OnNodeUpsert(node *v1.Node) {
	if node.Name != t.nodeName {
		return
	}
	n := &Node{Name: node.Name, Labels: node.Labels}
	for _, a := range node.Status.Addresses {
		if a.Type != v1.NodeInternalIP && a.Type != v1.NodeExternalIP {
			continue
		}
		if ip, err := ParseAddr(a.Address); err == nil {
			n.Addresses = append(n.Addresses, ip)
		}
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if p, err := ParsePrefix(c); err == nil {
			n.PodCIDRs = append(n.PodCIDRs, p)
		}
	}
	t.changed(func() {
		if old := t.node; old != nil && old.Zone() == n.Zone() && slices.Equal(old.Addresses, n.Addresses) &&
			maps.Equal(old.Labels, n.Labels) && slices.Equal(old.PodCIDRs, n.PodCIDRs) {
			return
		}
		t.node = n
		t.nodeChanged = true
	})
}

// OnNodeDelete is part of Handler.
func (t *Tracker) OnNodeDelete(name string) {
	if name != t.nodeName {
		return
	}
	t.changed(func() {
		t.node = nil
		t.nodeChanged = true
	})
}

// OnSynced is part of Handler.
func (t *Tracker) OnSynced() {
	t.changed(func() { t.synced = true })
}

// Pending returns the Service and EndpointSlice changes not yet folded into a Snapshot.
func (t *Tracker) Pending() (services, endpoints int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.serviceChanges, t.endpointChanges
}

// Synced reports whether the source delivered its initial state.
func (t *Tracker) Synced() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.synced
}

// Snapshot is the model as of one sync. Its maps belong to the Tracker and stay valid
// (and unchanged) until the next call to Snapshot; treat them as read-only.
type Snapshot struct {
	// Services holds every ServicePort a backend should program.
	Services map[ServicePortName]*ServicePort
	// Endpoints holds every endpoint of each ServicePort, sorted, unfiltered: backends
	// choose among them with PlanPort.
	Endpoints map[ServicePortName][]*Endpoint
	// PortsByService lists each Service's ports, for backends that work per Service.
	PortsByService map[types.NamespacedName][]*ServicePort
	Node           *Node
	// Nodes holds the node's parameters per family, resolved by the sync loop for this
	// sync (see NodeParams); the Tracker leaves it empty.
	Nodes map[Family]NodeParams
	// Changed holds the Services whose ports or endpoints may have changed since the
	// previous Snapshot (including deleted ones); NodeChanged says the Node changed.
	Changed     map[types.NamespacedName]struct{}
	NodeChanged bool
	// PreviousPorts holds, for each changed Service, its ports as of the previous
	// Snapshot, so backends can find what to remove and whose conntrack to clear.
	PreviousPorts map[types.NamespacedName][]*ServicePort
	// PreviousEndpoints holds the previous endpoints of each changed ServicePort.
	PreviousEndpoints map[ServicePortName][]*Endpoint
	// ServiceChanges and EndpointChanges count the events folded into this Snapshot;
	// TriggerTimes are the last-change-trigger-times of the EndpointSlices among them.
	ServiceChanges  int
	EndpointChanges int
	TriggerTimes    []time.Time
	// EndpointCount is the number of endpoints of all ports (kept incrementally).
	EndpointCount int
}

// Snapshot folds the changes since the previous call into the model and returns it.
// Only one goroutine (the sync loop) may call it.
func (t *Tracker) Snapshot() *Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &Snapshot{
		Services:          t.flatPorts,
		Endpoints:         t.endpoints,
		PortsByService:    t.ports,
		Node:              t.node,
		Changed:           t.dirty,
		NodeChanged:       t.nodeChanged,
		PreviousPorts:     map[types.NamespacedName][]*ServicePort{},
		PreviousEndpoints: map[ServicePortName][]*Endpoint{},
		ServiceChanges:    t.serviceChanges,
		EndpointChanges:   t.endpointChanges,
		TriggerTimes:      t.triggerTimes,
	}
	for nn := range t.dirty {
		old := t.ports[nn]
		s.PreviousPorts[nn] = old
		for _, p := range old {
			s.PreviousEndpoints[p.Name] = t.endpoints[p.Name]
			t.endpointCount -= len(t.endpoints[p.Name])
			delete(t.flatPorts, p.Name)
			delete(t.endpoints, p.Name)
		}
		delete(t.ports, nn)
		svc := t.services[nn]
		if svc == nil {
			continue
		}
		ports := ServicePorts(svc)
		if len(ports) == 0 {
			continue
		}
		t.ports[nn] = ports
		for _, p := range ports {
			t.flatPorts[p.Name] = p
			var lists [][]*Endpoint
			for _, slice := range t.slicesByService[nn] {
				lists = append(lists, SliceEndpoints(slice, p.Name.Port, p.Protocol, t.nodeName, p.TrafficDistribution))
			}
			t.endpoints[p.Name] = MergeEndpoints(lists...)
			t.endpointCount += len(t.endpoints[p.Name])
		}
	}
	s.EndpointCount = t.endpointCount
	t.dirty = map[types.NamespacedName]struct{}{}
	t.nodeChanged = false
	t.serviceChanges, t.endpointChanges, t.triggerTimes = 0, 0, nil
	return s
}

// MarkAllChanged makes the next Snapshot recompute every Service, as after a failed sync.
func (t *Tracker) MarkAllChanged() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for nn := range t.services {
		t.dirty[nn] = struct{}{}
	}
	for nn := range t.ports {
		t.dirty[nn] = struct{}{}
	}
}
