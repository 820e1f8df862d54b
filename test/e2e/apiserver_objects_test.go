package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// sliceManager is the endpointslice.kubernetes.io/managed-by value of the slices the
// tests write by hand: not the EndpointSlice controller's, so that nothing would
// fight over them even in a cluster that runs one.
const sliceManager = "e2e.kproxy.io"

// apiCtx bounds every single API call of the tests.
func apiCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// tcpPort is a TCP Service port named name, forwarding to the same port number.
func tcpPort(name string, port int32) v1.ServicePort {
	return v1.ServicePort{Name: name, Protocol: v1.ProtocolTCP, Port: port, TargetPort: intstr.FromInt32(port)}
}

// createService creates a Service in the test namespace and returns it as the API
// server stored it (with its allocated ClusterIP and NodePorts).
func createService(t *testing.T, client kubernetes.Interface, svc *v1.Service) *v1.Service {
	t.Helper()
	if svc.Namespace == "" {
		svc.Namespace = ns
	}
	ctx, cancel := apiCtx()
	defer cancel()
	out, err := client.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create Service %s/%s: %v", svc.Namespace, svc.Name, err)
	}
	return out
}

func newService(name string, typ v1.ServiceType, ports ...v1.ServicePort) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1.ServiceSpec{Type: typ, Ports: ports},
	}
}

// newSlice builds an EndpointSlice of the Service svcName with ready endpoints on the
// named pods, serving the given ports (their numbers are the pods' ports).
func newSlice(svcName, sliceName string, ports []v1.ServicePort, pods ...string) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns,
			Name:      sliceName,
			Labels: map[string]string{
				discovery.LabelServiceName: svcName,
				discovery.LabelManagedBy:   sliceManager,
			},
		},
		AddressType: discovery.AddressTypeIPv4,
	}
	for _, p := range ports {
		name, proto, port := p.Name, p.Protocol, p.TargetPort.IntVal
		s.Ports = append(s.Ports, discovery.EndpointPort{Name: &name, Protocol: &proto, Port: &port})
	}
	s.Endpoints = podEndpoints(pods...)
	return s
}

func podEndpoints(pods ...string) []discovery.Endpoint {
	eps := []discovery.Endpoint{}
	for _, name := range pods {
		p := cluster.PodByName(name)
		ready, node := true, p.Node
		eps = append(eps, discovery.Endpoint{
			Addresses:  []string{p.IP},
			Conditions: discovery.EndpointConditions{Ready: &ready},
			NodeName:   &node,
		})
	}
	return eps
}

// putSlice creates the slice, or replaces it if it exists; it returns when the API
// server has acknowledged the write.
func putSlice(t *testing.T, client kubernetes.Interface, s *discovery.EndpointSlice) *discovery.EndpointSlice {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	api := client.DiscoveryV1().EndpointSlices(s.Namespace)
	out, err := api.Create(ctx, s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		var cur *discovery.EndpointSlice
		cur, err = api.Get(ctx, s.Name, metav1.GetOptions{})
		if err == nil {
			s.ResourceVersion = cur.ResourceVersion
			out, err = api.Update(ctx, s, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		t.Fatalf("write EndpointSlice %s/%s: %v", s.Namespace, s.Name, err)
	}
	return out
}

func deleteSlice(t *testing.T, client kubernetes.Interface, name string) {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	if err := client.DiscoveryV1().EndpointSlices(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete EndpointSlice %s/%s: %v", ns, name, err)
	}
}

func deleteService(t *testing.T, client kubernetes.Interface, name string) {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	if err := client.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete Service %s/%s: %v", ns, name, err)
	}
}

// createNode registers a Node like a kubelet would: with its InternalIP and podCIDR.
func createNode(client kubernetes.Interface, name, ip, podCIDR string, labels map[string]string) error {
	ctx, cancel := apiCtx()
	defer cancel()
	n := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       v1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
	}
	created, err := client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create Node %s: %w", name, err)
	}
	created.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}, {Type: v1.NodeHostName, Address: name}}
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("Node %s status: %w", name, err)
	}
	return nil
}

func createNamespace(client kubernetes.Interface, name string) error {
	ctx, cancel := apiCtx()
	defer cancel()
	_, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}
