package proxytest

import (
	"net/netip"
	"reflect"

	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/nodeaddr"
)

// Feed gives a world to a handler as a source's initial list does: the Node, every
// Service and EndpointSlice, then OnSynced.
func Feed(h model.Handler, w World) {
	if w.Node != nil {
		h.OnNodeUpsert(w.Node.DeepCopy())
	}
	for _, s := range w.Services {
		h.OnServiceUpsert(s.DeepCopy())
	}
	for _, s := range w.Slices {
		h.OnEndpointSliceUpsert(s.DeepCopy())
	}
	h.OnSynced()
}

// Transition gives a handler the events that turn world from into world to, as a
// watch would: upserts of what is new or changed, deletes of what is gone. Objects
// that are the same in both worlds cause no event, so the next Snapshot's Changed
// holds only the Services the change touches.
func Transition(h model.Handler, from, to World) {
	if to.Node != nil && (from.Node == nil || !reflect.DeepEqual(from.Node, to.Node)) {
		h.OnNodeUpsert(to.Node.DeepCopy())
	}
	if from.Node != nil && to.Node == nil {
		h.OnNodeDelete(from.Node.Name)
	}
	diff(from.Services, to.Services, h.OnServiceUpsert, h.OnServiceDelete)
	diff(from.Slices, to.Slices, h.OnEndpointSliceUpsert, h.OnEndpointSliceDelete)
}

// diff upserts the objects of to that are new or changed and deletes those of from
// that are gone, by namespace and name.
func diff[T interface {
	comparable
	GetNamespace() string
	GetName() string
	DeepCopy() T
}](from, to []T, upsert func(T), del func(ns, name string)) {
	old := map[string]T{}
	for _, o := range from {
		old[o.GetNamespace()+"/"+o.GetName()] = o
	}
	for _, o := range to {
		key := o.GetNamespace() + "/" + o.GetName()
		if prev, ok := old[key]; !ok || !reflect.DeepEqual(prev, o) {
			upsert(o.DeepCopy())
		}
		delete(old, key)
	}
	for _, o := range old {
		del(o.GetNamespace(), o.GetName())
	}
}

// Transitions are every ordered pair of different worlds.
func Transitions() [][2]World {
	ws := Worlds()
	var out [][2]World
	for _, a := range ws {
		for _, b := range ws {
			if a.Name != b.Name {
				out = append(out, [2]World{a, b})
			}
		}
	}
	return out
}

// Snapshot takes the tracker's next snapshot with the node's parameters resolved as
// the sync loop resolves them (nodeaddr.Resolver): NodePorts on every address, pods
// told by ClusterCIDR, the node's interfaces holding LocalAddresses.
func Snapshot(tr *model.Tracker) *model.Snapshot {
	r := nodeaddr.Resolver{
		NodePorts:   nodeaddr.MustParse("all"),
		DetectLocal: nodeaddr.DetectLocal{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix(ClusterCIDR)}},
		LocalAddrs:  func() ([]netip.Addr, error) { return LocalAddresses(), nil },
	}
	s := tr.Snapshot()
	s.Nodes = r.Resolve(s.Node)
	return s
}
