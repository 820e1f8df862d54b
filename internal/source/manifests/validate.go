package manifests

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kproxy/kproxy/internal/model"
)

// The checks here are the API server's for the fields a proxy uses: an object the API
// server would refuse is refused here too, with the field path in the message.

func validateService(svc *v1.Service) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if msgs := validation.IsDNS1035Label(svc.Name); len(msgs) > 0 {
		bad("metadata.name: %s", strings.Join(msgs, "; "))
	}
	if msgs := validation.IsDNS1123Label(svc.Namespace); len(msgs) > 0 {
		bad("metadata.namespace: %s", strings.Join(msgs, "; "))
	}
	spec := &svc.Spec
	headless := spec.ClusterIP == v1.ClusterIPNone
	switch spec.Type {
	case v1.ServiceTypeClusterIP, v1.ServiceTypeNodePort, v1.ServiceTypeLoadBalancer:
		if headless && spec.Type != v1.ServiceTypeClusterIP {
			bad("spec.clusterIP: may not be None for type %s", spec.Type)
		}
	case v1.ServiceTypeExternalName:
		if spec.ClusterIP != "" {
			bad("spec.clusterIP: must be empty for type ExternalName")
		}
		if spec.ExternalName == "" {
			bad("spec.externalName: required for type ExternalName")
		}
	default:
		bad("spec.type: unsupported value %q", spec.Type)
	}
	if len(spec.ClusterIPs) > 0 && spec.ClusterIP != spec.ClusterIPs[0] {
		bad("spec.clusterIPs[0]: %q must match spec.clusterIP %q", spec.ClusterIPs[0], spec.ClusterIP)
	}
	if !headless {
		var fams []model.Family
		for i, s := range spec.ClusterIPs {
			ip, err := model.ParseAddr(s)
			if err != nil {
				bad("spec.clusterIPs[%d]: %q is not a valid IP address", i, s)
				continue
			}
			fams = append(fams, model.FamilyOf(ip))
		}
		if len(spec.ClusterIPs) > 2 {
			bad("spec.clusterIPs: at most two addresses, one per IP family")
		} else if len(fams) == 2 && fams[0] == fams[1] {
			bad("spec.clusterIPs: two %s addresses; dual-stack needs one of each family", fams[0])
		}
	} else if len(spec.ClusterIPs) > 1 {
		bad("spec.clusterIPs: None must be the only value")
	}
	for i, f := range spec.IPFamilies {
		if f != v1.IPv4Protocol && f != v1.IPv6Protocol {
			bad("spec.ipFamilies[%d]: unsupported value %q", i, f)
		} else if i == 1 && f == spec.IPFamilies[0] {
			bad("spec.ipFamilies[1]: duplicate value %q", f)
		}
	}
	if len(spec.IPFamilies) > 2 {
		bad("spec.ipFamilies: at most two families")
	}
	if len(spec.Ports) == 0 && !headless && spec.Type != v1.ServiceTypeExternalName {
		bad("spec.ports: required")
	}
	validateServicePorts(spec, bad)
	for i, s := range spec.ExternalIPs {
		ip, err := model.ParseAddr(s)
		switch {
		case err != nil:
			bad("spec.externalIPs[%d]: %q is not a valid IP address: %v", i, s, err)
		case specialRange(ip) != "":
			bad("spec.externalIPs[%d]: %q may not be in the %s", i, s, specialRange(ip))
		}
	}
	switch spec.SessionAffinity {
	case v1.ServiceAffinityNone:
		if spec.SessionAffinityConfig != nil {
			bad("spec.sessionAffinityConfig: must be empty when sessionAffinity is None")
		}
	case v1.ServiceAffinityClientIP:
		if t := *spec.SessionAffinityConfig.ClientIP.TimeoutSeconds; t < 1 || t > maxStickySeconds {
			bad("spec.sessionAffinityConfig.clientIP.timeoutSeconds: %d is not between 1 and %d", t, maxStickySeconds)
		}
	default:
		bad("spec.sessionAffinity: unsupported value %q", spec.SessionAffinity)
	}
	if len(spec.LoadBalancerSourceRanges) > 0 && spec.Type != v1.ServiceTypeLoadBalancer {
		bad("spec.loadBalancerSourceRanges: may only be used when type is LoadBalancer")
	}
	for i, s := range spec.LoadBalancerSourceRanges {
		if _, err := model.ParsePrefix(s); err != nil {
			bad("spec.loadBalancerSourceRanges[%d]: %q is not a valid CIDR", i, s)
		}
	}
	switch spec.ExternalTrafficPolicy {
	case "":
	case v1.ServiceExternalTrafficPolicyCluster, v1.ServiceExternalTrafficPolicyLocal:
		if !externallyAccessible(svc) {
			bad("spec.externalTrafficPolicy: may only be set for externally-accessible services")
		}
	default:
		bad("spec.externalTrafficPolicy: unsupported value %q", spec.ExternalTrafficPolicy)
	}
	if p := spec.InternalTrafficPolicy; p != nil && *p != v1.ServiceInternalTrafficPolicyCluster && *p != v1.ServiceInternalTrafficPolicyLocal {
		bad("spec.internalTrafficPolicy: unsupported value %q", *p)
	}
	if spec.HealthCheckNodePort != 0 && (spec.Type != v1.ServiceTypeLoadBalancer || spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal) {
		bad("spec.healthCheckNodePort: may only be set when type is LoadBalancer and externalTrafficPolicy is Local")
	}
	for i, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP == "" {
			continue
		}
		if _, err := model.ParseAddr(ing.IP); err != nil {
			bad("status.loadBalancer.ingress[%d].ip: %q is not a valid IP address: %v", i, ing.IP, err)
		}
	}
	return joinErrors(errs)
}

func validateServicePorts(spec *v1.ServiceSpec, bad func(string, ...any)) {
	names := map[string]int{}
	portProto := map[string]int{}
	nodePorts := map[string]int{}
	for i := range spec.Ports {
		sp := &spec.Ports[i]
		f := fmt.Sprintf("spec.ports[%d]", i)
		if len(spec.Ports) > 1 && sp.Name == "" {
			bad("%s.name: required when a Service has more than one port", f)
		}
		if sp.Name != "" {
			if msgs := validation.IsDNS1123Label(sp.Name); len(msgs) > 0 {
				bad("%s.name: %s", f, strings.Join(msgs, "; "))
			}
			if j, dup := names[sp.Name]; dup {
				bad("%s.name: %q is also the name of spec.ports[%d]", f, sp.Name, j)
			}
			names[sp.Name] = i
		}
		if sp.Port < 1 || sp.Port > 65535 {
			bad("%s.port: %d is not between 1 and 65535", f, sp.Port)
		}
		if !validProtocol(sp.Protocol) {
			bad("%s.protocol: unsupported value %q (TCP, UDP or SCTP)", f, sp.Protocol)
		}
		pp := fmt.Sprintf("%s/%d", sp.Protocol, sp.Port)
		if j, dup := portProto[pp]; dup {
			bad("%s: port %d/%s is also spec.ports[%d]", f, sp.Port, sp.Protocol, j)
		}
		portProto[pp] = i
		if sp.NodePort != 0 {
			if spec.Type == v1.ServiceTypeClusterIP || spec.Type == v1.ServiceTypeExternalName {
				bad("%s.nodePort: may not be used when type is %s", f, spec.Type)
			}
			np := fmt.Sprintf("%s/%d", sp.Protocol, sp.NodePort)
			if j, dup := nodePorts[np]; dup {
				bad("%s.nodePort: %d/%s is also spec.ports[%d].nodePort", f, sp.NodePort, sp.Protocol, j)
			}
			nodePorts[np] = i
		}
		switch tp := sp.TargetPort; {
		case tp.Type == intstr.Int && (tp.IntVal < 1 || tp.IntVal > 65535):
			bad("%s.targetPort: %d is not between 1 and 65535", f, tp.IntVal)
		case tp.Type == intstr.String && len(validation.IsValidPortName(tp.StrVal)) > 0:
			bad("%s.targetPort: %q is not a valid port name", f, tp.StrVal)
		}
	}
}

func validProtocol(p v1.Protocol) bool {
	return p == v1.ProtocolTCP || p == v1.ProtocolUDP || p == v1.ProtocolSCTP
}

// defaultEndpointSlice fills the port fields the API server defaults.
func defaultEndpointSlice(s *discovery.EndpointSlice) {
	for i := range s.Ports {
		if s.Ports[i].Name == nil {
			name := ""
			s.Ports[i].Name = &name
		}
		if s.Ports[i].Protocol == nil {
			proto := v1.ProtocolTCP
			s.Ports[i].Protocol = &proto
		}
	}
}

func validateEndpointSlice(s *discovery.EndpointSlice) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if msgs := validation.IsDNS1123Subdomain(s.Name); len(msgs) > 0 {
		bad("metadata.name: %s", strings.Join(msgs, "; "))
	}
	if msgs := validation.IsDNS1123Label(s.Namespace); len(msgs) > 0 {
		bad("metadata.namespace: %s", strings.Join(msgs, "; "))
	}
	var want model.Family
	switch s.AddressType {
	case discovery.AddressTypeIPv4:
		want = model.IPv4
	case discovery.AddressTypeIPv6:
		want = model.IPv6
	case discovery.AddressTypeFQDN:
	default:
		bad("addressType: unsupported value %q (IPv4, IPv6 or FQDN)", s.AddressType)
	}
	for i := range s.Endpoints {
		ep := &s.Endpoints[i]
		if n := len(ep.Addresses); n < 1 || n > 100 {
			bad("endpoints[%d].addresses: must have between 1 and 100 entries, has %d", i, n)
		}
		for j, a := range ep.Addresses {
			f := fmt.Sprintf("endpoints[%d].addresses[%d]", i, j)
			if want == 0 {
				if msgs := validation.IsDNS1123Subdomain(a); len(msgs) > 0 {
					bad("%s: %q is not a valid FQDN", f, a)
				}
				continue
			}
			ip, err := model.ParseAddr(a)
			switch {
			case err != nil:
				bad("%s: %q is not a valid %s address: %v", f, a, want, err)
			case model.FamilyOf(ip) != want:
				bad("%s: %q is not a valid %s address", f, a, want)
			case specialRange(ip) != "":
				bad("%s: %q may not be in the %s", f, a, specialRange(ip))
			}
		}
	}
	names := map[string]int{}
	for i := range s.Ports {
		sp := &s.Ports[i]
		f := fmt.Sprintf("ports[%d]", i)
		if *sp.Name != "" {
			if msgs := validation.IsValidPortName(*sp.Name); len(msgs) > 0 && len(validation.IsDNS1123Label(*sp.Name)) > 0 {
				bad("%s.name: %q is not a valid port name", f, *sp.Name)
			}
		}
		if j, dup := names[*sp.Name]; dup {
			bad("%s.name: %q is also the name of ports[%d]", f, *sp.Name, j)
		}
		names[*sp.Name] = i
		if !validProtocol(*sp.Protocol) {
			bad("%s.protocol: unsupported value %q (TCP, UDP or SCTP)", f, *sp.Protocol)
		}
		if sp.Port != nil && (*sp.Port < 1 || *sp.Port > 65535) {
			bad("%s.port: %d is not between 1 and 65535", f, *sp.Port)
		}
	}
	return joinErrors(errs)
}

func validateNode(n *v1.Node) error {
	if msgs := validation.IsDNS1123Subdomain(n.Name); len(msgs) > 0 {
		return fmt.Errorf("metadata.name: %s", strings.Join(msgs, "; "))
	}
	for i, a := range n.Status.Addresses {
		if a.Type == v1.NodeInternalIP || a.Type == v1.NodeExternalIP {
			if _, err := model.ParseAddr(a.Address); err != nil {
				return fmt.Errorf("status.addresses[%d]: %q is not a valid IP address", i, a.Address)
			}
		}
	}
	return nil
}

// specialRange names the range an address is in when the API server refuses it as
// an endpoint or external IP ("" otherwise): traffic DNATed to such an address
// would not leave the node, or would reach the node itself (CVE-2020-8558).
func specialRange(ip netip.Addr) string {
	switch {
	case ip.IsUnspecified():
		return "unspecified address (0.0.0.0, ::)"
	case ip.IsLoopback():
		return "loopback range (127.0.0.0/8, ::1/128)"
	case ip.IsLinkLocalUnicast():
		return "link-local range (169.254.0.0/16, fe80::/10)"
	case ip.IsLinkLocalMulticast():
		return "link-local multicast range (224.0.0.0/24, ff02::/16)"
	}
	return ""
}

// joinErrors joins problems on one line, as log lines and Errors() want them.
func joinErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}

// maxStickySeconds is the API server's limit for sessionAffinityConfig.clientIP.timeoutSeconds.
const maxStickySeconds = 86400
