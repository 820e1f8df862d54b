package scale

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// benchNamespace holds every Service the benchmark creates.
const benchNamespace = "bench"

// The probe Services point at real pods: the first created at pod-a2, the last at
// pod-b1 (on the other node, so that path is exercised too).
const (
	firstProbePod = "pod-a2"
	lastProbePod  = "pod-b1"
)

// service is one benchmark Service and the latest version of its EndpointSlice.
type service struct {
	Name      string
	ClusterIP string
	mu        sync.Mutex
	slice     *discoveryv1.EndpointSlice
}

func (s *service) target() string { return s.ClusterIP + ":80" }

func serviceName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// podEndpoint is an endpoint on a real echo pod.
func podEndpoint(pod string) discoveryv1.Endpoint {
	p := cluster.PodByName(pod)
	return endpointAt(p.IP, p.Node)
}

func endpointAt(addr, node string) discoveryv1.Endpoint {
	yes, no := true, false
	return discoveryv1.Endpoint{
		Addresses:  []string{addr},
		Conditions: discoveryv1.EndpointConditions{Ready: &yes, Serving: &yes, Terminating: &no},
		NodeName:   &node,
	}
}

// fakeEndpoints are M addresses in the sink's range for Service i. Services share
// addresses (the range holds 16384), as Services sharing pods do; the proxies make
// one endpoint chain per Service and address all the same.
func fakeEndpoints(i, m int) []discoveryv1.Endpoint {
	eps := make([]discoveryv1.Endpoint, m)
	for e := range eps {
		eps[e] = endpointAt(nthAddr(fakeBase, (i*m+e)%fakeCount), "node2")
	}
	return eps
}

func newServiceObject(name string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNamespace},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeClusterIP,
			Ports: []v1.ServicePort{{
				Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(80),
			}},
		},
	}
}

func newSliceObject(svc string, eps []discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	name, port, proto := "http", int32(80), v1.ProtocolTCP
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      svc + "-1",
			Namespace: benchNamespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: svc,
				discoveryv1.LabelManagedBy:   "kproxy-bench",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
}

// createClusterObjects makes the namespace and the two Node objects (upstream
// kube-proxy reads its node's addresses and podCIDR from node1).
func createClusterObjects(ctx context.Context, client kubernetes.Interface) error {
	_, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("bench: namespace %s: %w", benchNamespace, err)
	}
	for _, n := range []struct{ name, ip, cidr string }{
		{"node1", cluster.Node1IP, "10.244.1.0/24"},
		{"node2", cluster.Node2IP, "10.244.2.0/24"},
	} {
		node := &v1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{"kubernetes.io/hostname": n.name}},
			Spec:       v1.NodeSpec{PodCIDR: n.cidr, PodCIDRs: []string{n.cidr}},
		}
		created, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("bench: node %s: %w", n.name, err)
		}
		created.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: n.ip}, {Type: v1.NodeHostName, Address: n.name}}
		created.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, LastHeartbeatTime: metav1.Now()}}
		if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("bench: node %s status: %w", n.name, err)
		}
	}
	return nil
}

// createServices creates Services [from, to) and their EndpointSlices with workers
// concurrent clients; svcs[i] is filled in for each.
func createServices(ctx context.Context, client kubernetes.Interface, svcs []*service, from, to, m, workers int, log func(string, ...any)) error {
	start := time.Now()
	jobs := make(chan int)
	var (
		wg       sync.WaitGroup
		firstErr atomic.Pointer[error]
		done     atomic.Int64
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if firstErr.Load() != nil {
					continue
				}
				if err := createOne(ctx, client, svcs, i, m); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				if n := done.Add(1); n%2000 == 0 {
					log("bench: %d Services created (%.0f/s)", n, float64(n)/time.Since(start).Seconds())
				}
			}
		}()
	}
	for i := from; i < to; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	log("bench: Services %s..%s created in %v", serviceName(from), serviceName(to-1), time.Since(start).Round(time.Millisecond))
	return nil
}

func createOne(ctx context.Context, client kubernetes.Interface, svcs []*service, i, m int) error {
	name := serviceName(i)
	svc, err := retryCreate(func() (*v1.Service, error) {
		return client.CoreV1().Services(benchNamespace).Create(ctx, newServiceObject(name), metav1.CreateOptions{})
	}, func() (*v1.Service, error) {
		return client.CoreV1().Services(benchNamespace).Get(ctx, name, metav1.GetOptions{})
	})
	if err != nil {
		return fmt.Errorf("bench: Service %s/%s: %w", benchNamespace, name, err)
	}
	var eps []discoveryv1.Endpoint
	switch i {
	case 0:
		eps = []discoveryv1.Endpoint{podEndpoint(firstProbePod)}
	case len(svcs) - 1:
		eps = []discoveryv1.Endpoint{podEndpoint(lastProbePod)}
	default:
		eps = fakeEndpoints(i, m)
	}
	slices := client.DiscoveryV1().EndpointSlices(benchNamespace)
	slice, err := retryCreate(func() (*discoveryv1.EndpointSlice, error) {
		return slices.Create(ctx, newSliceObject(name, eps), metav1.CreateOptions{})
	}, func() (*discoveryv1.EndpointSlice, error) {
		return slices.Get(ctx, name+"-1", metav1.GetOptions{})
	})
	if err != nil {
		return fmt.Errorf("bench: EndpointSlice %s/%s-1: %w", benchNamespace, name, err)
	}
	svcs[i] = &service{Name: name, ClusterIP: svc.Spec.ClusterIP, slice: slice}
	return nil
}

// retryCreate retries a create that failed on a loaded API server; a create that
// went through although its answer was lost shows up as AlreadyExists, and then
// the object is read back.
func retryCreate[T any](create, get func() (T, error)) (T, error) {
	var (
		obj T
		err error
	)
	for attempt := 0; attempt < 5; attempt++ {
		obj, err = create()
		if apierrors.IsAlreadyExists(err) {
			obj, err = get()
		}
		if err == nil {
			return obj, nil
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	return obj, err
}

// setEndpoints replaces the Service's endpoints and returns when the API server
// acknowledged the update.
func (s *service) setEndpoints(ctx context.Context, client kubernetes.Interface, eps []discoveryv1.Endpoint) (time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.slice.DeepCopy()
	next.Endpoints = eps
	updated, err := client.DiscoveryV1().EndpointSlices(benchNamespace).Update(ctx, next, metav1.UpdateOptions{})
	acked := time.Now()
	if err != nil {
		return acked, fmt.Errorf("bench: update EndpointSlice %s/%s: %w", benchNamespace, next.Name, err)
	}
	s.slice = updated
	return acked, nil
}

// replaceOneEndpoint swaps one of the slice's endpoints, at random, for an endpoint
// at addr: the shape of a rolling update, where pods are replaced one by one.
func (s *service) replaceOneEndpoint(ctx context.Context, client kubernetes.Interface, addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.slice.DeepCopy()
	if len(next.Endpoints) == 0 {
		next.Endpoints = []discoveryv1.Endpoint{endpointAt(addr, "node2")}
	} else {
		next.Endpoints[rand.N(len(next.Endpoints))] = endpointAt(addr, "node2")
	}
	updated, err := client.DiscoveryV1().EndpointSlices(benchNamespace).Update(ctx, next, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("bench: update EndpointSlice %s/%s: %w", benchNamespace, next.Name, err)
	}
	s.slice = updated
	return nil
}

func endpointsOf(pod string) []discoveryv1.Endpoint {
	return []discoveryv1.Endpoint{podEndpoint(pod)}
}

// bgCtx is the context of requests that run as long as the benchmark does.
func bgCtx() context.Context { return context.Background() }
