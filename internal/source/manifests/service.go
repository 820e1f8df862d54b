package manifests

import (
	"errors"
	"fmt"
	"slices"
	"strconv"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kproxy/kproxy/internal/allocator"
	"github.com/kproxy/kproxy/internal/model"
)

// Port keys in allocator requests: "TCP/80" for a Service port, and this one for the
// healthCheckNodePort.
const healthCheckKey = "healthCheckNodePort"

func portKey(p *v1.ServicePort) string { return string(p.Protocol) + "/" + strconv.Itoa(int(p.Port)) }

// servicePlan is a defaulted, validated Service and what it asks the allocator for.
type servicePlan struct {
	svc *v1.Service
	req allocator.Request
	// ipFields[i] is the field req.IPs[i] fills; portFields maps a port key to its
	// field and asked[key] to the value asked for (0: any).
	ipFields   []string
	portFields map[string]string
	askedPort  map[string]int32
	// explicit is true when the Service names any IP or port itself; such Services are
	// assigned first, so a dynamic pick never takes what another one asks for.
	explicit bool
}

// planService defaults svc the way the API server does, validates the fields proxies
// use, and works out its allocation request. families are the configured service
// CIDR families, the first one primary.
func planService(svc *v1.Service, families []model.Family) (*servicePlan, error) {
	svc = svc.DeepCopy()
	defaultService(svc)
	if err := validateService(svc); err != nil {
		return nil, err
	}
	p := &servicePlan{svc: svc, portFields: map[string]string{}, askedPort: map[string]int32{}}
	if err := p.planIPs(families); err != nil {
		return nil, err
	}
	p.planNodePorts()
	return p, nil
}

// planIPs resolves ipFamilyPolicy, ipFamilies and clusterIPs like the API server.
func (p *servicePlan) planIPs(families []model.Family) error {
	spec := &p.svc.Spec
	if spec.Type == v1.ServiceTypeExternalName {
		spec.ClusterIP, spec.ClusterIPs, spec.IPFamilies, spec.IPFamilyPolicy = "", nil, nil, nil
		return nil
	}
	if len(families) == 0 {
		return errors.New("no service-cluster-ip-range is configured")
	}
	configured := func(f v1.IPFamily) bool { return slices.Contains(families, familyOf(f)) }
	headless := spec.ClusterIP == v1.ClusterIPNone
	var given []model.Family // families of the given clusterIPs
	if !headless {
		for _, s := range spec.ClusterIPs {
			ip, _ := model.ParseAddr(s)
			given = append(given, model.FamilyOf(ip))
		}
	}
	if spec.IPFamilyPolicy == nil {
		pol := v1.IPFamilyPolicySingleStack
		if len(given) == 2 {
			pol = v1.IPFamilyPolicyRequireDualStack
		} else if len(spec.IPFamilies) == 2 {
			return errors.New("spec.ipFamilyPolicy: must be PreferDualStack or RequireDualStack when two ipFamilies are given")
		}
		spec.IPFamilyPolicy = &pol
	}
	pol := *spec.IPFamilyPolicy
	for i, f := range spec.IPFamilies {
		if i < len(given) && familyOf(f) != given[i] {
			return fmt.Errorf("spec.ipFamilies[%d]: %s does not match spec.clusterIPs[%d] %s", i, f, i, spec.ClusterIPs[i])
		}
	}
	fams := slices.Clone(spec.IPFamilies)
	for i := len(fams); i < len(given); i++ {
		fams = append(fams, ipFamily(given[i]))
	}
	if len(fams) == 0 {
		fams = []v1.IPFamily{ipFamily(families[0])}
	}
	dualCluster := slices.Contains(families, model.IPv4) && slices.Contains(families, model.IPv6)
	switch pol {
	case v1.IPFamilyPolicySingleStack:
		if len(fams) > 1 {
			return errors.New("spec.ipFamilyPolicy: SingleStack allows one IP family, but two are given")
		}
	case v1.IPFamilyPolicyRequireDualStack, v1.IPFamilyPolicyPreferDualStack:
		if pol == v1.IPFamilyPolicyRequireDualStack && !dualCluster {
			return errors.New("spec.ipFamilyPolicy: RequireDualStack needs service-cluster-ip-ranges of both IP families")
		}
		if dualCluster && len(fams) == 1 {
			other := v1.IPv6Protocol
			if fams[0] == v1.IPv6Protocol {
				other = v1.IPv4Protocol
			}
			fams = append(fams, other)
		}
		if !dualCluster && len(fams) == 2 && len(given) < 2 && configured(fams[0]) {
			fams = fams[:1] // PreferDualStack on a single-stack cluster
		}
	default:
		return fmt.Errorf("spec.ipFamilyPolicy: unsupported value %q", pol)
	}
	for i, f := range fams {
		if !configured(f) {
			return fmt.Errorf("spec.ipFamilies[%d]: %s is not configured (no %s service-cluster-ip-range)", i, f, f)
		}
	}
	spec.IPFamilies = fams
	if headless {
		spec.ClusterIPs = []string{v1.ClusterIPNone}
		return nil
	}
	for i, f := range fams {
		r := allocator.IPRequest{Family: familyOf(f)}
		if i < len(spec.ClusterIPs) {
			r.IP, _ = model.ParseAddr(spec.ClusterIPs[i])
			p.explicit = true
		}
		field := fmt.Sprintf("spec.clusterIPs[%d]", i)
		if i == 0 {
			field = "spec.clusterIP"
		}
		p.req.IPs = append(p.req.IPs, r)
		p.ipFields = append(p.ipFields, field)
	}
	return nil
}

// planNodePorts asks for a nodePort per port of NodePort and LoadBalancer Services
// (unless allocateLoadBalancerNodePorts is false), and a healthCheckNodePort for
// LoadBalancers with externalTrafficPolicy Local.
func (p *servicePlan) planNodePorts() {
	spec := &p.svc.Spec
	wantNodePorts := spec.Type == v1.ServiceTypeNodePort ||
		(spec.Type == v1.ServiceTypeLoadBalancer && (spec.AllocateLoadBalancerNodePorts == nil || *spec.AllocateLoadBalancerNodePorts))
	for i := range spec.Ports {
		sp := &spec.Ports[i]
		if sp.NodePort == 0 && !wantNodePorts {
			continue
		}
		key := portKey(sp)
		p.portFields[key] = fmt.Sprintf("spec.ports[%d].nodePort", i)
		p.askedPort[key] = sp.NodePort
		p.explicit = p.explicit || sp.NodePort != 0
		p.req.Ports = append(p.req.Ports, allocator.PortRequest{Key: key, Port: int(sp.NodePort), Share: strconv.Itoa(int(sp.Port))})
	}
	if spec.Type == v1.ServiceTypeLoadBalancer && spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal {
		p.portFields[healthCheckKey] = "spec.healthCheckNodePort"
		p.askedPort[healthCheckKey] = spec.HealthCheckNodePort
		p.explicit = p.explicit || spec.HealthCheckNodePort != 0
		p.req.Ports = append(p.req.Ports, allocator.PortRequest{Key: healthCheckKey, Port: int(spec.HealthCheckNodePort)})
	}
}

// apply writes what the allocator granted into the Service.
func (p *servicePlan) apply(a allocator.Assignment) *v1.Service {
	spec := &p.svc.Spec
	if len(a.IPs) > 0 {
		spec.ClusterIPs = nil
		for _, ip := range a.IPs {
			spec.ClusterIPs = append(spec.ClusterIPs, ip.String())
		}
	}
	if len(spec.ClusterIPs) > 0 {
		spec.ClusterIP = spec.ClusterIPs[0]
	}
	for i := range spec.Ports {
		if np, ok := a.Ports[portKey(&spec.Ports[i])]; ok {
			spec.Ports[i].NodePort = int32(np)
		}
	}
	if np, ok := a.Ports[healthCheckKey]; ok {
		spec.HealthCheckNodePort = int32(np)
	}
	return p.svc
}

// explain turns an allocator error into one naming the field and the other Service.
func (p *servicePlan) explain(err error) error {
	key := allocator.ErrorKey(err)
	field, value := "", ""
	for i, r := range p.req.IPs {
		if r.Family.String() == key {
			field = p.ipFields[i]
			if r.IP.IsValid() {
				value = r.IP.String()
			}
		}
	}
	if f, ok := p.portFields[key]; ok {
		field, value = f, strconv.Itoa(int(p.askedPort[key]))
	}
	var held *allocator.HeldError
	switch {
	case field == "":
		return err
	case errors.As(err, &held):
		return fmt.Errorf("%s %s is already allocated to service %s", field, value, held.Holder)
	default:
		return fmt.Errorf("%s: %w", field, err)
	}
}

func familyOf(f v1.IPFamily) model.Family {
	if f == v1.IPv6Protocol {
		return model.IPv6
	}
	return model.IPv4
}

func ipFamily(f model.Family) v1.IPFamily {
	if f == model.IPv6 {
		return v1.IPv6Protocol
	}
	return v1.IPv4Protocol
}

// defaultService fills the fields the API server defaults.
func defaultService(svc *v1.Service) {
	spec := &svc.Spec
	if spec.Type == "" {
		spec.Type = v1.ServiceTypeClusterIP
	}
	if spec.ClusterIP != "" && len(spec.ClusterIPs) == 0 {
		spec.ClusterIPs = []string{spec.ClusterIP}
	}
	if spec.ClusterIP == "" && len(spec.ClusterIPs) > 0 {
		spec.ClusterIP = spec.ClusterIPs[0]
	}
	for i := range spec.Ports {
		sp := &spec.Ports[i]
		if sp.Protocol == "" {
			sp.Protocol = v1.ProtocolTCP
		}
		if sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal == 0 {
			sp.TargetPort = intstr.FromInt32(sp.Port)
		}
	}
	if spec.SessionAffinity == "" {
		spec.SessionAffinity = v1.ServiceAffinityNone
	}
	if spec.SessionAffinity == v1.ServiceAffinityClientIP {
		if spec.SessionAffinityConfig == nil {
			spec.SessionAffinityConfig = &v1.SessionAffinityConfig{}
		}
		if spec.SessionAffinityConfig.ClientIP == nil {
			spec.SessionAffinityConfig.ClientIP = &v1.ClientIPConfig{}
		}
		if spec.SessionAffinityConfig.ClientIP.TimeoutSeconds == nil {
			t := int32(v1.DefaultClientIPServiceAffinitySeconds)
			spec.SessionAffinityConfig.ClientIP.TimeoutSeconds = &t
		}
	}
	if externallyAccessible(svc) && spec.ExternalTrafficPolicy == "" {
		spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
	}
	if spec.Type != v1.ServiceTypeExternalName && spec.InternalTrafficPolicy == nil {
		itp := v1.ServiceInternalTrafficPolicyCluster
		spec.InternalTrafficPolicy = &itp
	}
	if spec.Type == v1.ServiceTypeLoadBalancer && spec.AllocateLoadBalancerNodePorts == nil {
		t := true
		spec.AllocateLoadBalancerNodePorts = &t
	}
}

func externallyAccessible(svc *v1.Service) bool {
	t := svc.Spec.Type
	return t == v1.ServiceTypeLoadBalancer || t == v1.ServiceTypeNodePort ||
		(t == v1.ServiceTypeClusterIP && len(svc.Spec.ExternalIPs) > 0)
}
