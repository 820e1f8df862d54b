package apiserver

import (
	"fmt"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// The informer handlers translate informer events into Handler calls. Objects are
// passed on as the cache holds them: neither the cache nor the Handler mutates them,
// and a change arrives as a new object, so sharing is safe and saves a copy per event.
//
// Updates are passed on even when the resourceVersion did not change: those are the
// periodic resyncs, which upstream also hands to its change tracker so that a missed
// event cannot leave the rules wrong for longer than one resync period.

// objectHandler adapts one informer to the model.Handler calls for its object type:
// adds and updates become upserts, deletions (tombstones included) become deletes.
type objectHandler[T any] struct {
	kind   string
	upsert func(T)
	delete func(namespace, name string)
}

func (o objectHandler[T]) OnAdd(obj any, _ bool) { o.onUpsert(obj) }

func (o objectHandler[T]) OnUpdate(_, obj any) { o.onUpsert(obj) }

func (o objectHandler[T]) onUpsert(obj any) {
	t, ok := obj.(T)
	if !ok {
		klog.ErrorS(nil, "Informer delivered an unexpected object", "kind", o.kind, "type", typeName(obj))
		return
	}
	o.upsert(t)
}

func (o objectHandler[T]) OnDelete(obj any) {
	if ns, name, ok := deletedKey(obj); ok {
		o.delete(ns, name)
	}
}

func serviceHandler(h model.Handler) objectHandler[*v1.Service] {
	return objectHandler[*v1.Service]{kind: "Service", upsert: h.OnServiceUpsert, delete: h.OnServiceDelete}
}

func sliceHandler(h model.Handler) objectHandler[*discovery.EndpointSlice] {
	return objectHandler[*discovery.EndpointSlice]{kind: "EndpointSlice", upsert: h.OnEndpointSliceUpsert, delete: h.OnEndpointSliceDelete}
}

func nodeHandler(h model.Handler) objectHandler[*v1.Node] {
	return objectHandler[*v1.Node]{kind: "Node", upsert: h.OnNodeUpsert, delete: func(_, name string) { h.OnNodeDelete(name) }}
}

// deletedKey returns the namespace and name of a deleted object. When the watch
// missed the deletion and a re-list found the object gone, the informer hands over
// a DeletedFinalStateUnknown tombstone that carries the cache key instead.
func deletedKey(obj any) (namespace, name string, ok bool) {
	if tomb, isTomb := obj.(cache.DeletedFinalStateUnknown); isTomb {
		ns, n, err := cache.SplitMetaNamespaceKey(tomb.Key)
		if err != nil {
			klog.ErrorS(err, "Cannot read the key of a deleted object", "key", tomb.Key)
			return "", "", false
		}
		return ns, n, true
	}
	key, err := cache.MetaNamespaceKeyFunc(obj)
	if err != nil {
		klog.ErrorS(err, "Cannot read the name of a deleted object", "type", typeName(obj))
		return "", "", false
	}
	ns, n, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		klog.ErrorS(err, "Cannot read the key of a deleted object", "key", key)
		return "", "", false
	}
	return ns, n, true
}

func typeName(obj any) string { return fmt.Sprintf("%T", obj) }
