package model

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// defaultStickySeconds is the API server's default for sessionAffinityConfig.clientIP.timeoutSeconds.
const defaultStickySeconds = 10800

// ServicePorts converts a Service into the ServicePorts a backend programs. Services
// that no proxy handles (ExternalName, headless, or without a ClusterIP) yield nil.
// Addresses that do not parse are skipped; the caller validated the object already.
func ServicePorts(svc *v1.Service) []*ServicePort {
	if svc.Spec.Type == v1.ServiceTypeExternalName {
		return nil
	}
	clusterIPs := svc.Spec.ClusterIPs
	if len(clusterIPs) == 0 && svc.Spec.ClusterIP != "" {
		clusterIPs = []string{svc.Spec.ClusterIP}
	}
	var cips []netip.Addr
	for _, s := range clusterIPs {
		if s == v1.ClusterIPNone {
			return nil
		}
		if ip, err := ParseAddr(s); err == nil {
			cips = append(cips, ip)
		}
	}
	if len(cips) == 0 {
		return nil
	}
	externalIPs := parseAddrs(svc.Spec.ExternalIPs)
	var lbIPs []netip.Addr
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer {
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode != v1.LoadBalancerIPModeVIP) {
				continue
			}
			if ip, err := ParseAddr(ing.IP); err == nil {
				lbIPs = append(lbIPs, ip)
			}
		}
	}
	var ranges []netip.Prefix
	for _, r := range svc.Spec.LoadBalancerSourceRanges {
		if p, err := ParsePrefix(r); err == nil {
			ranges = append(ranges, p)
		}
	}
	sticky := 0
	if svc.Spec.SessionAffinity == v1.ServiceAffinityClientIP {
		sticky = defaultStickySeconds
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			sticky = int(*c.ClientIP.TimeoutSeconds)
		}
	}
	hasNodePorts := svc.Spec.Type == v1.ServiceTypeNodePort || svc.Spec.Type == v1.ServiceTypeLoadBalancer
	externallyAccessible := hasNodePorts || len(externalIPs) > 0
	var hcnp int32
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer && svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal {
		hcnp = svc.Spec.HealthCheckNodePort
	}
	trafficDistribution := ""
	if svc.Spec.TrafficDistribution != nil {
		trafficDistribution = *svc.Spec.TrafficDistribution
	}

	ports := make([]*ServicePort, 0, len(svc.Spec.Ports))
	for _, p := range svc.Spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = v1.ProtocolTCP
		}
		sp := &ServicePort{
			Name: ServicePortName{
				NamespacedName: types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name},
				Port:           p.Name,
				Protocol:       proto,
			},
			ClusterIPs:               cips,
			Port:                     p.Port,
			Protocol:                 proto,
			ExternalIPs:              externalIPs,
			LoadBalancerIPs:          lbIPs,
			LoadBalancerSourceRanges: ranges,
			StickyMaxAgeSeconds:      sticky,
			ExternalPolicyLocal:      externallyAccessible && svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal,
			InternalPolicyLocal:      svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == v1.ServiceInternalTrafficPolicyLocal,
			HealthCheckNodePort:      hcnp,
			TrafficDistribution:      trafficDistribution,
		}
		if hasNodePorts {
			sp.NodePort = p.NodePort
		}
		ports = append(ports, sp)
	}
	return ports
}

// SliceEndpoints returns the endpoints of one EndpointSlice for the slice port that
// matches the given port name and protocol, or nil. FQDN slices, ports without a number
// and endpoints without an address are ignored, like upstream; only addresses[0] counts.
//
// trafficDistribution is the Service's spec.trafficDistribution. On a cluster the
// EndpointSlice controller turns it into hints; with no controller (the manifests
// source, a bare API server) nobody would, so an endpoint without hints gets the ones
// the controller would give it: its zone, and for PreferSameNode also its node.
func SliceEndpoints(slice *discovery.EndpointSlice, portName string, proto v1.Protocol, nodeName, trafficDistribution string) []*Endpoint {
	if slice.AddressType != discovery.AddressTypeIPv4 && slice.AddressType != discovery.AddressTypeIPv6 {
		return nil
	}
	var port int32
	for _, sp := range slice.Ports {
		name := ""
		if sp.Name != nil {
			name = *sp.Name
		}
		p := v1.ProtocolTCP
		if sp.Protocol != nil {
			p = *sp.Protocol
		}
		if name == portName && p == proto && sp.Port != nil && *sp.Port != 0 {
			port = *sp.Port
			break
		}
	}
	if port == 0 {
		return nil
	}
	want := sliceFamily(slice.AddressType)
	var eps []*Endpoint
	for i := range slice.Endpoints {
		e := &slice.Endpoints[i]
		if len(e.Addresses) == 0 {
			continue
		}
		// CheckEndpointSlice reports the addresses skipped here.
		ip, err := ParseAddr(e.Addresses[0])
		if err != nil || FamilyOf(ip) != want {
			continue
		}
		ep := &Endpoint{IP: ip, Port: port}
		ep.Ready = e.Conditions.Ready == nil || *e.Conditions.Ready
		ep.Serving = ep.Ready
		if e.Conditions.Serving != nil {
			ep.Serving = *e.Conditions.Serving
		}
		ep.Terminating = e.Conditions.Terminating != nil && *e.Conditions.Terminating
		if e.NodeName != nil {
			ep.NodeName = *e.NodeName
			ep.IsLocal = nodeName != "" && *e.NodeName == nodeName
		}
		if e.Zone != nil {
			ep.Zone = *e.Zone
		}
		if e.Hints != nil {
			for _, z := range e.Hints.ForZones {
				ep.ZoneHints = append(ep.ZoneHints, z.Name)
			}
			for _, n := range e.Hints.ForNodes {
				ep.NodeHints = append(ep.NodeHints, n.Name)
			}
		} else {
			controllerHints(ep, trafficDistribution)
		}
		eps = append(eps, ep)
	}
	return eps
}

// MergeEndpoints merges the endpoints of several slices: an IP:port that appears more
// than once counts once (a non-terminating copy wins), and the result is sorted by its
// "IP:port" string, the order upstream's probabilities and indexes follow.
func MergeEndpoints(lists ...[]*Endpoint) []*Endpoint {
	byKey := map[netip.AddrPort]*Endpoint{}
	for _, l := range lists {
		for _, ep := range l {
			k := ep.AddrPort()
			if old, ok := byKey[k]; ok && (!old.Terminating || ep.Terminating) {
				continue
			}
			byKey[k] = ep
		}
	}
	out := make([]*Endpoint, 0, len(byKey))
	for _, ep := range byKey {
		out = append(out, ep)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// ParseAddr parses an IP address, accepting the leading zeros and surrounding blanks
// that upstream normalises ("172.30.0.041" is 172.30.0.41).
//
// IPv6 zone identifiers ("fe80::1%eth0") are refused: the API server refuses them,
// and no rule can carry one (iptables-restore and nft would reject the whole
// transaction, so one such address would stop every Service from syncing).
func ParseAddr(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	ip, err := netip.ParseAddr(s)
	if err == nil {
		if ip.Zone() != "" {
			return netip.Addr{}, fmt.Errorf("IPv6 zone identifier %q is not allowed", ip.Zone())
		}
		return ip.Unmap(), nil
	}
	if parts := strings.Split(s, "."); len(parts) == 4 {
		for i, p := range parts {
			n, perr := strconv.ParseUint(p, 10, 8)
			if perr != nil {
				return netip.Addr{}, err
			}
			parts[i] = strconv.FormatUint(n, 10)
		}
		return netip.ParseAddr(strings.Join(parts, "."))
	}
	return netip.Addr{}, err
}

// ParsePrefix parses a CIDR the same tolerant way, and masks it.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	addr, bits, ok := strings.Cut(s, "/")
	if !ok {
		return netip.ParsePrefix(s)
	}
	ip, err := ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, err
	}
	p, err := netip.ParsePrefix(ip.String() + "/" + bits)
	if err != nil {
		return netip.Prefix{}, err
	}
	return p.Masked(), nil
}

func parseAddrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		if ip, err := ParseAddr(s); err == nil {
			out = append(out, ip)
		}
	}
	return out
}

// controllerHints sets the hints the EndpointSlice controller derives from
// trafficDistribution.
func controllerHints(ep *Endpoint, trafficDistribution string) {
	switch trafficDistribution {
	case v1.ServiceTrafficDistributionPreferClose, v1.ServiceTrafficDistributionPreferSameZone:
		if ep.Zone != "" {
			ep.ZoneHints = []string{ep.Zone}
		}
	case v1.ServiceTrafficDistributionPreferSameNode:
		if ep.Zone != "" {
			ep.ZoneHints = []string{ep.Zone}
		}
		if ep.NodeName != "" {
			ep.NodeHints = []string{ep.NodeName}
		}
	}
}
