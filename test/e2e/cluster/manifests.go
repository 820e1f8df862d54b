package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// ServicePort is one port of a Service built by Service.YAML.
type ServicePort struct {
	Name       string
	Protocol   string // "TCP" when empty
	Port       int32
	TargetPort int32 // Port when 0
	NodePort   int32 // 0: allocated by kproxy (for NodePort/LoadBalancer types)
}

// Service describes a v1 Service manifest in the few fields the tests vary.
type Service struct {
	Namespace, Name string
	Type            string // "ClusterIP" when empty
	ClusterIP       string // "" lets kproxy allocate one; "None" for headless
	Ports           []ServicePort
	ExternalIPs     []string
	// LoadBalancerIngress are status.loadBalancer.ingress IPs.
	LoadBalancerIngress        []string
	ClientIPAffinity           bool
	AffinityTimeoutSeconds     int32
	ExternalTrafficPolicyLocal bool
	InternalTrafficPolicyLocal bool
}

// PortName is upstream's "ns/name:port" name of one of the Service's ports.
func (s Service) PortName(port string) string {
	if port == "" {
		return s.Namespace + "/" + s.Name
	}
	return s.Namespace + "/" + s.Name + ":" + port
}

func protocol(p string) v1.Protocol {
	if p == "" {
		return v1.ProtocolTCP
	}
	return v1.Protocol(strings.ToUpper(p))
}

// YAML renders the Service.
func (s Service) YAML() string {
	svc := v1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name},
		Spec: v1.ServiceSpec{
			Type:        v1.ServiceTypeClusterIP,
			ClusterIP:   s.ClusterIP,
			ExternalIPs: s.ExternalIPs,
		},
	}
	if s.Type != "" {
		svc.Spec.Type = v1.ServiceType(s.Type)
	}
	if s.ClusterIP != "" {
		svc.Spec.ClusterIPs = []string{s.ClusterIP}
	}
	for _, p := range s.Ports {
		target := p.TargetPort
		if target == 0 {
			target = p.Port
		}
		svc.Spec.Ports = append(svc.Spec.Ports, v1.ServicePort{
			Name: p.Name, Protocol: protocol(p.Protocol), Port: p.Port,
			TargetPort: intstr.FromInt32(target), NodePort: p.NodePort,
		})
	}
	for _, ip := range s.LoadBalancerIngress {
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
	}
	if s.ClientIPAffinity {
		timeout := s.AffinityTimeoutSeconds
		if timeout == 0 {
			timeout = 10800
		}
		svc.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		svc.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: &timeout}}
	}
	if s.ExternalTrafficPolicyLocal {
		svc.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	}
	if s.InternalTrafficPolicyLocal {
		local := v1.ServiceInternalTrafficPolicyLocal
		svc.Spec.InternalTrafficPolicy = &local
	}
	return mustYAML(svc)
}

// SlicePort is one port of an EndpointSlice; Name and Protocol must match the
// Service port it serves.
type SlicePort struct {
	Name     string
	Protocol string // "TCP" when empty
	Port     int32
}

// SliceEndpoint is one endpoint of an EndpointSlice.
type SliceEndpoint struct {
	IP          string
	Node        string
	NotReady    bool // ready=false, serving=false
	Terminating bool // ready=false, serving=true, terminating=true
}

// EndpointSlice describes a discovery.k8s.io/v1 EndpointSlice manifest.
type EndpointSlice struct {
	Namespace, Service string
	Name               string // Service+"-1" when empty
	Ports              []SlicePort
	Endpoints          []SliceEndpoint
}

// PodEndpoints makes ready endpoints of the named pods, with their node names.
func PodEndpoints(pods ...string) []SliceEndpoint {
	var eps []SliceEndpoint
	for _, name := range pods {
		p := PodByName(name)
		eps = append(eps, SliceEndpoint{IP: p.IP, Node: p.Node})
	}
	return eps
}

// YAML renders the EndpointSlice.
func (e EndpointSlice) YAML() string {
	name := e.Name
	if name == "" {
		name = e.Service + "-1"
	}
	slice := discoveryv1.EndpointSlice{
		TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: e.Service}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range e.Ports {
		name, proto, port := p.Name, protocol(p.Protocol), p.Port
		slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &port})
	}
	for _, ep := range e.Endpoints {
		ready, serving, terminating := !ep.NotReady && !ep.Terminating, !ep.NotReady, ep.Terminating
		node := ep.Node
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ep.IP},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			NodeName:   &node,
		})
	}
	return mustYAML(slice)
}

// NodeYAML renders a v1 Node with one InternalIP and one pod CIDR.
func NodeYAML(name, internalIP, podCIDR string) string {
	n := v1.Node{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1.LabelHostname: name}},
		Spec:       v1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: internalIP},
			{Type: v1.NodeHostName, Address: name},
		}},
	}
	return mustYAML(n)
}

// Documents joins several manifests into one multi-document YAML file.
func Documents(docs ...string) string { return strings.Join(docs, "---\n") }

func mustYAML(obj any) string {
	b, err := yaml.Marshal(obj)
	if err != nil {
		panic(fmt.Sprintf("cluster: marshal %T: %v", obj, err))
	}
	// Drop the empty status/creationTimestamp noise the API types always marshal.
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(l) == "creationTimestamp: null" {
			continue
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n")
}

func manifestFile(name string) string {
	if strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") || strings.HasSuffix(name, ".json") {
		return name
	}
	return name + ".yaml"
}

// WriteManifest writes a manifest file atomically: the content goes to a temp file
// outside the watched directory and is renamed into it, so kproxy never reads half
// a file. name gets ".yaml" appended unless it has a manifest suffix.
func (c *Cluster) WriteManifest(name, content string) error {
	tmp, err := os.CreateTemp(c.WorkDir, "manifest-*.tmp")
	if err != nil {
		return fmt.Errorf("cluster: manifest %s: %w", name, err)
	}
	if _, err := tmp.WriteString(content); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("cluster: manifest %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("cluster: manifest %s: %w", name, err)
	}
	dst := filepath.Join(c.ManifestDir, manifestFile(name))
	if err := os.Rename(tmp.Name(), dst); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("cluster: manifest %s: %w", name, err)
	}
	return nil
}

// WriteManifestInPlace writes a manifest with a plain truncate-and-write, the way an
// editor or "cat >" would, so the watcher may see a partial file first.
func (c *Cluster) WriteManifestInPlace(name, content string) error {
	if err := os.WriteFile(filepath.Join(c.ManifestDir, manifestFile(name)), []byte(content), 0o644); err != nil {
		return fmt.Errorf("cluster: manifest %s: %w", name, err)
	}
	return nil
}

// RemoveManifest deletes a manifest file.
func (c *Cluster) RemoveManifest(name string) error {
	if err := os.Remove(filepath.Join(c.ManifestDir, manifestFile(name))); err != nil {
		return fmt.Errorf("cluster: remove manifest %s: %w", name, err)
	}
	return nil
}
