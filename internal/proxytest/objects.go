// Package proxytest holds what the backends' tests share: a table of worlds (Services,
// EndpointSlices and the Node, as the API server holds them), the packets to trace
// through each world's rules with the endpoints Kubernetes Service semantics send them
// to, and the plumbing that feeds a world, or the change from one world to another,
// through model.Tracker as a source would. Every backend's tests run the same two
// kinds of test on these worlds: a partial sync from one world to another leaves the
// kernel as a full sync of the second does, and the backend's own output sends each
// packet where the table says.
package proxytest

import (
	"fmt"
	"net/netip"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The node the worlds are seen from, as upstream's test fixture (reference 4.1): pods
// come from 10.0.0.0/8 (the local-traffic detector's cluster CIDR), the node has the
// address 192.168.0.2 and also holds 192.168.99.11, which one Service uses as an
// externalIP.
const (
	NodeName    = "test-node"
	ClusterCIDR = "10.0.0.0/8"
	ServiceCIDR = "172.30.0.0/16"
	NodeIP      = "192.168.0.2"
	OtherNode   = "node2"
)

// LocalAddresses are the node's own addresses: what the tracer treats as local.
func LocalAddresses() []netip.Addr {
	return []netip.Addr{netip.MustParseAddr(NodeIP), netip.MustParseAddr("192.168.99.11")}
}

// node is the Node object.
func node() *v1.Node {
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: NodeName},
		Spec:       v1.NodeSpec{PodCIDR: "10.0.0.0/24", PodCIDRs: []string{"10.0.0.0/24"}},
		Status:     v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: NodeIP}}},
	}
}

// svc describes a Service; its ports are "name:port/PROTO" with targetPort = port.
type svc struct {
	ns, name      string
	typ           v1.ServiceType
	clusterIP     string
	ports         []v1.ServicePort
	externalIPs   []string
	lbIPs         []string
	sourceRanges  []string
	etpLocal      bool
	itpLocal      bool
	affinity      int32 // ClientIP timeoutSeconds; 0 is none
	healthCheckNP int32
}

func port(name string, p int32, proto v1.Protocol, nodePort int32) v1.ServicePort {
	return v1.ServicePort{Name: name, Port: p, Protocol: proto, TargetPort: intstr.FromInt32(p), NodePort: nodePort}
}

func (s svc) object() *v1.Service {
	typ := s.typ
	if typ == "" {
		typ = v1.ServiceTypeClusterIP
	}
	o := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name},
		Spec: v1.ServiceSpec{Type: typ, ClusterIP: s.clusterIP, ClusterIPs: []string{s.clusterIP}, Ports: s.ports,
			ExternalIPs: s.externalIPs, LoadBalancerSourceRanges: s.sourceRanges, HealthCheckNodePort: s.healthCheckNP},
	}
	if s.etpLocal {
		o.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	} else if typ == v1.ServiceTypeNodePort || typ == v1.ServiceTypeLoadBalancer {
		o.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
	}
	if s.itpLocal {
		local := v1.ServiceInternalTrafficPolicyLocal
		o.Spec.InternalTrafficPolicy = &local
	}
	if s.affinity > 0 {
		o.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		o.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: &s.affinity}}
	}
	for _, ip := range s.lbIPs {
		o.Status.LoadBalancer.Ingress = append(o.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
	}
	return o
}

// ep is one endpoint of a slice; its conditions are ready, serving, terminating.
type ep struct {
	ip                          string
	node                        string
	ready, serving, terminating bool
}

func ready(ip, node string) ep { return ep{ip: ip, node: node, ready: true, serving: true} }

// servingTerminating is an endpoint being deleted that still serves.
func servingTerminating(ip, node string) ep {
	return ep{ip: ip, node: node, serving: true, terminating: true}
}

// gone is a terminating endpoint that no longer serves.
func gone(ip, node string) ep { return ep{ip: ip, node: node, terminating: true} }

// slice is the EndpointSlice of a Service with the given ports ("name" → port number)
// and endpoints.
func slice(ns, service, name string, ports []v1.ServicePort, eps ...ep) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discovery.LabelServiceName: service}},
		AddressType: discovery.AddressTypeIPv4,
	}
	for _, p := range ports {
		s.Ports = append(s.Ports, discovery.EndpointPort{Name: ptr(p.Name), Port: ptr(p.TargetPort.IntVal), Protocol: ptr(p.Protocol)})
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{
			Addresses:  []string{e.ip},
			NodeName:   ptr(e.node),
			Conditions: discovery.EndpointConditions{Ready: ptr(e.ready), Serving: ptr(e.serving), Terminating: ptr(e.terminating)},
		})
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func sliceName(ns, service string) string { return fmt.Sprintf("%s-%s-1", ns, service) }
