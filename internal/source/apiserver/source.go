package apiserver

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

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
	if opts.NodeName == "" {
		return nil, errors.New("API source: the node name (--hostname-override) is empty")
	}
	client, host, err := newClient(opts)
	if err != nil {
		return nil, err
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
		if err := inf.informer.SetTransform(stripManagedFields); err != nil {
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

	klog.InfoS("Watching the API server", "server", s.host, "node", s.opts.NodeName, "resync", resync)
	go services.Run(ctx.Done())
	go slices.Run(ctx.Done())
	go nodes.Run(ctx.Done())

	if !cache.WaitForNamedCacheSync("kproxy", ctx.Done(), regs...) {
		return nil // ctx ended before the first sync: the kernel was never touched
	}
	s.synced.Store(true)
	klog.InfoS("Initial Services, EndpointSlices and Node received from the API server", "server", s.host)
	s.handler.OnSynced()
	<-ctx.Done()
	return nil
}

// stripManagedFields drops metadata.managedFields before an object is cached: kproxy
// never reads them and they are often the bulk of an object's size.
func stripManagedFields(obj any) (any, error) {
	if acc, ok := obj.(metav1.ObjectMetaAccessor); ok {
		acc.GetObjectMeta().SetManagedFields(nil)
	}
	return obj, nil
}
