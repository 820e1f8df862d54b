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

type serviceHandler struct{ h model.Handler }

func (s serviceHandler) OnAdd(obj any, _ bool) { s.upsert(obj) }

func (s serviceHandler) OnUpdate(_, obj any) { s.upsert(obj) }

func (s serviceHandler) upsert(obj any) {
	svc, ok := obj.(*v1.Service)
	if !ok {
		klog.ErrorS(nil, "Service informer delivered an unexpected object", "type", typeName(obj))
		return
	}
	s.h.OnServiceUpsert(svc)
}

func (s serviceHandler) OnDelete(obj any) {
	ns, name, ok := deletedKey(obj)
	if !ok {
		return
	}
	s.h.OnServiceDelete(ns, name)
}

type sliceHandler struct{ h model.Handler }

func (s sliceHandler) OnAdd(obj any, _ bool) { s.upsert(obj) }

func (s sliceHandler) OnUpdate(_, obj any) { s.upsert(obj) }

func (s sliceHandler) upsert(obj any) {
	slice, ok := obj.(*discovery.EndpointSlice)
	if !ok {
		klog.ErrorS(nil, "EndpointSlice informer delivered an unexpected object", "type", typeName(obj))
		return
	}
	s.h.OnEndpointSliceUpsert(slice)
}

func (s sliceHandler) OnDelete(obj any) {
	ns, name, ok := deletedKey(obj)
	if !ok {
		return
	}
	s.h.OnEndpointSliceDelete(ns, name)
}

type nodeHandler struct{ h model.Handler }

func (n nodeHandler) OnAdd(obj any, _ bool) { n.upsert(obj) }

func (n nodeHandler) OnUpdate(_, obj any) { n.upsert(obj) }

func (n nodeHandler) upsert(obj any) {
	node, ok := obj.(*v1.Node)
	if !ok {
		klog.ErrorS(nil, "Node informer delivered an unexpected object", "type", typeName(obj))
		return
	}
	n.h.OnNodeUpsert(node)
}

func (n nodeHandler) OnDelete(obj any) {
	_, name, ok := deletedKey(obj)
	if !ok {
		return
	}
	n.h.OnNodeDelete(name)
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
