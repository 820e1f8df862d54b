package model

import (
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// Handler receives the objects a source (the manifests directory or the API server)
// sees. Sources call it from any goroutine; implementations must be safe for that.
// Objects passed in are owned by the handler afterwards: sources must not mutate them.
type Handler interface {
	// OnServiceUpsert is called for an added or changed Service.
	OnServiceUpsert(svc *v1.Service)
	OnServiceDelete(namespace, name string)
	// OnEndpointSliceUpsert is called for an added or changed EndpointSlice. The slice's
	// kubernetes.io/service-name label links it to its Service.
	OnEndpointSliceUpsert(slice *discovery.EndpointSlice)
	OnEndpointSliceDelete(namespace, name string)
	// OnNodeUpsert / OnNodeDelete are called for the node this proxy runs on only.
	OnNodeUpsert(node *v1.Node)
	OnNodeDelete(name string)
	// OnSynced is called once the source has delivered its initial state; the proxy
	// does not program the kernel before that, so a restart never flushes rules that a
	// partial view would lack.
	OnSynced()
}
