package model

import (
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// The reasons of the problems below, CamelCase like upstream's Event reasons. An
// Event's reason is part of what the Event recorder deduplicates on, so each reason
// stands for one kind of problem with one object.
const (
	// ReasonInvalidServiceAddress: a clusterIP, externalIP, load balancer ingress IP or
	// source range of a Service is not a valid address (or CIDR); the Service is
	// programmed without it.
	ReasonInvalidServiceAddress = "InvalidServiceAddress"
	// ReasonInvalidEndpointAddress: an endpoint's address is not a valid address of
	// its EndpointSlice's address type; the Service is programmed without it.
	ReasonInvalidEndpointAddress = "InvalidEndpointAddress"
)

// Problem is a part of an object that kproxy cannot program. The rest of the object
// is programmed, and every other object is unaffected: a value that no rule can
// carry is left out of the model, so it can never fail a whole sync.
type Problem struct {
	// Object names the object, as Events refer to it.
	Object v1.ObjectReference
	Reason string
	// Message says what was left out and why, naming the object and the field.
	Message string
}

// Reporter receives problems; the Tracker calls it once per distinct problem of an
// object (again only after the object changed its problem or was fixed in between).
type Reporter func(Problem)

// CheckService returns the problem of a Service, or nil. ServicePorts skips exactly
// the values reported here: both decide with ParseAddr and ParsePrefix.
func CheckService(svc *v1.Service) *Problem {
	var bad []string
	add := func(field, value string, err error) {
		bad = append(bad, fmt.Sprintf("%s %q: %v", field, value, err))
	}
	if svc.Spec.Type == v1.ServiceTypeExternalName {
		return nil
	}
	clusterIPs, field := svc.Spec.ClusterIPs, "spec.clusterIPs"
	if len(clusterIPs) == 0 && svc.Spec.ClusterIP != "" {
		clusterIPs, field = []string{svc.Spec.ClusterIP}, "spec.clusterIP"
	}
	validClusterIPs := 0
	for i, s := range clusterIPs {
		if s == v1.ClusterIPNone {
			return nil
		}
		if _, err := ParseAddr(s); err != nil {
			add(fmt.Sprintf("%s[%d]", field, i), s, err)
		} else {
			validClusterIPs++
		}
	}
	for i, s := range svc.Spec.ExternalIPs {
		if _, err := ParseAddr(s); err != nil {
			add(fmt.Sprintf("spec.externalIPs[%d]", i), s, err)
		}
	}
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer {
		for i, ing := range svc.Status.LoadBalancer.Ingress {
			if ing.IP == "" {
				continue
			}
			if _, err := ParseAddr(ing.IP); err != nil {
				add(fmt.Sprintf("status.loadBalancer.ingress[%d].ip", i), ing.IP, err)
			}
		}
	}
	for i, s := range svc.Spec.LoadBalancerSourceRanges {
		if _, err := ParsePrefix(s); err != nil {
			add(fmt.Sprintf("spec.loadBalancerSourceRanges[%d]", i), s, err)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	what := "is programmed without"
	if validClusterIPs == 0 && len(clusterIPs) > 0 {
		what = "is not programmed (no valid cluster IP)"
	}
	return &Problem{
		Object:  v1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: svc.Namespace, Name: svc.Name, UID: svc.UID},
		Reason:  ReasonInvalidServiceAddress,
		Message: fmt.Sprintf("Service %s/%s %s: %s", svc.Namespace, svc.Name, what, listFirst(bad)),
	}
}

// CheckEndpointSlice returns the problem of an EndpointSlice, or nil. SliceEndpoints
// skips exactly the endpoints reported here. FQDN slices are no problem: no proxy
// uses them, like upstream.
func CheckEndpointSlice(slice *discovery.EndpointSlice) *Problem {
	want := sliceFamily(slice.AddressType)
	if want == 0 {
		return nil
	}
	var bad []string
	for i := range slice.Endpoints {
		addrs := slice.Endpoints[i].Addresses
		if len(addrs) == 0 {
			bad = append(bad, fmt.Sprintf("endpoints[%d]: no address", i))
			continue
		}
		// Only addresses[0] is used (upstream too); the others are never programmed.
		ip, err := ParseAddr(addrs[0])
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("endpoints[%d].addresses[0] %q: %v", i, addrs[0], err))
		case FamilyOf(ip) != want:
			bad = append(bad, fmt.Sprintf("endpoints[%d].addresses[0] %q: not an %s address (addressType %s)", i, addrs[0], want, slice.AddressType))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return &Problem{
		Object: v1.ObjectReference{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1",
			Namespace: slice.Namespace, Name: slice.Name, UID: slice.UID},
		Reason: ReasonInvalidEndpointAddress,
		Message: fmt.Sprintf("EndpointSlice %s/%s of Service %s is programmed without: %s", slice.Namespace, slice.Name,
			slice.Labels[discovery.LabelServiceName], listFirst(bad)),
	}
}

// sliceFamily is the family of an EndpointSlice's addresses, 0 for FQDN (or unknown).
func sliceFamily(t discovery.AddressType) Family {
	switch t {
	case discovery.AddressTypeIPv4:
		return IPv4
	case discovery.AddressTypeIPv6:
		return IPv6
	}
	return 0
}

// maxListed is how many bad values a problem's message names; the rest are counted.
// A slice of 1,000 bad endpoints must not make a log line of 1,000 entries.
const maxListed = 5

func listFirst(bad []string) string {
	if len(bad) <= maxListed {
		return strings.Join(bad, "; ")
	}
	return fmt.Sprintf("%s; and %d more", strings.Join(bad[:maxListed], "; "), len(bad)-maxListed)
}
