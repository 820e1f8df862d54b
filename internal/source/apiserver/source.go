package apiserver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// The selectors kube-proxy watches with. Services that name another proxy in
// service.kubernetes.io/service-proxy-name are that proxy's business; headless
// Services and their slices get no rules, so they are not even fetched.
const (
	serviceLabelSelector = "!service.kubernetes.io/service-proxy-name"
	serviceFieldSelector = "spec.clusterIP!=None"
	sliceLabelSelector   = "!service.kubernetes.io/headless"
)

// Source is the API source. Create it with New and start it with Run.
type Source struct {
	opts    Options
	client  kubernetes.Interface
	host    string
	handler model.Handler
	synced  atomic.Bool
}

// New checks the options and builds the API client; it does not contact the API
// server, so an unreachable server is not an error here (Run keeps retrying).
func New(opts Options, h model.Handler) (*Source, error) {
	client, host, err := NewClient(opts)
	if err != nil {
		return nil, err
	}
	return NewWithClient(opts, client, host, h)
}

// NewWithClient is New with a client made by NewClient (host is its server's URL).
func NewWithClient(opts Options, client kubernetes.Interface, host string, h model.Handler) (*Source, error) {
	if opts.NodeName == "" {
		return nil, errors.New("API source: the node name (--hostname-override) is empty")
	}
	return newWithClient(opts, client, host, h), nil
}

// newWithClient is New with a given client; tests pass a fake one.
func newWithClient(opts Options, client kubernetes.Interface, host string, h model.Handler) *Source {
	return &Source{opts: opts, client: client, host: host, handler: h}
}

// Synced reports whether the initial lists of all three informers have reached the
// Handler (and OnSynced was called). Health checks can use it as "ready".
func (s *Source) Synced() bool { return s.synced.Load() }

// Run starts the informers, calls OnSynced once every informer has delivered a real
// list from the API server, and follows changes until ctx ends. It never gives up
// on an unreachable API server: client-go's reflectors retry the list and the watch
// with backoff, and the Handler hears nothing meanwhile, so the rules in the kernel
// stay as they are. It returns nil when ctx ends.
func (s *Source) Run(ctx context.Context) error {
	resync := s.opts.ResyncPeriod
	nodeSelector := fields.OneTermEqualSelector(metav1.ObjectNameField, s.opts.NodeName).String()

	services := coreinformers.NewFilteredServiceInformer(s.client, metav1.NamespaceAll, resync, cache.Indexers{},
		func(o *metav1.ListOptions) {
			o.LabelSelector = serviceLabelSelector
			o.FieldSelector = serviceFieldSelector
		})
	slices := discoveryinformers.NewFilteredEndpointSliceInformer(s.client, metav1.NamespaceAll, resync, cache.Indexers{},
		func(o *metav1.ListOptions) { o.LabelSelector = sliceLabelSelector })
	nodes := coreinformers.NewFilteredNodeInformer(s.client, resync, cache.Indexers{},
		func(o *metav1.ListOptions) { o.FieldSelector = nodeSelector })

	var regs []cache.InformerSynced
	for _, inf := range []struct {
		what     string
		informer cache.SharedIndexInformer
		handler  cache.ResourceEventHandler
	}{
		{"Services", services, serviceHandler(s.handler)},
		{"EndpointSlices", slices, sliceHandler(s.handler)},
		{"Node " + s.opts.NodeName, nodes, nodeHandler(s.handler)},
	} {
		if err := inf.informer.SetTransform(slim); err != nil {
			return fmt.Errorf("API source: %s informer: %w", inf.what, err)
		}
		reg, err := inf.informer.AddEventHandler(inf.handler)
		if err != nil {
			return fmt.Errorf("API source: %s informer: %w", inf.what, err)
		}
		// The registration's HasSynced is true only once this handler has been
		// called for every object of the initial list, not merely once the cache
		// holds them.
		regs = append(regs, reg.HasSynced)
	}

	logger := klog.FromContext(ctx)
	logger.Info("Watching the API server", "server", s.host, "node", s.opts.NodeName, "resync", resync)
	// The informers stop when ctx ends; Run returns only after they have, so no
	// handler is called once it returned.
	var informers sync.WaitGroup
	defer informers.Wait()
	for _, inf := range []cache.SharedIndexInformer{services, slices, nodes} {
		informers.Go(func() { inf.Run(ctx.Done()) })
	}

	if !cache.WaitForNamedCacheSync("kproxy", ctx.Done(), regs...) {
		return nil // ctx ended before the first sync: the kernel was never touched
	}
	s.synced.Store(true)
	logger.Info("Initial Services, EndpointSlices and Node received from the API server", "server", s.host)
	s.handler.OnSynced()
	<-ctx.Done()
	return nil
}

// slim drops what kproxy never reads before an object is cached: managedFields
// (often the bulk of an object), annotations other than the EndpointSlice trigger
// time (kubectl's last-applied-configuration copies the whole object), and a Node's
// status beyond its addresses (the image list alone can be tens of kilobytes).
func slim(obj any) (any, error) {
	switch o := obj.(type) {
	case *v1.Service:
		o.ManagedFields, o.Annotations = nil, nil
	case *discoveryv1.EndpointSlice:
		o.ManagedFields = nil
		o.Endpoints = rightSized(o.Endpoints)
		if t, ok := o.Annotations[model.LastChangeTriggerTimeAnnotation]; ok {
			o.Annotations = map[string]string{model.LastChangeTriggerTimeAnnotation: t}
		} else {
			o.Annotations = nil
		}
	case *v1.Node:
		o.ManagedFields, o.Annotations = nil, nil
		o.Status = v1.NodeStatus{Addresses: o.Status.Addresses}
	case metav1.ObjectMetaAccessor:
		o.GetObjectMeta().SetManagedFields(nil)
	}
	return obj, nil
}
