package ipvs

import (
	"fmt"
	"net/netip"
	"sort"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/internal/model"
)

// VSKey identifies an IPVS virtual server.
type VSKey struct {
	Addr     netip.Addr
	Protocol v1.Protocol
	Port     uint16
}

func (k VSKey) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(k.Addr, k.Port), k.Protocol)
}

// VirtualServer is one desired IPVS virtual server and its real servers.
type VirtualServer struct {
	Key       VSKey
	Scheduler string
	// PersistenceSeconds > 0 makes the server persistent (ClientIP session affinity).
	PersistenceSeconds uint32
	// Destinations are the real servers, every one with weight 1.
	Destinations []netip.AddrPort
	// Service names the Service port, for logs and errors.
	Service string
}

// PlanInput is everything a plan depends on.
type PlanInput struct {
	Family    model.Family
	Snapshot  *model.Snapshot
	Scheduler string
	// NodePortIPs are the addresses NodePort virtual servers are made for.
	NodePortIPs []netip.Addr
	// NodeIPs are the node's addresses; a loadBalancerSourceRange holding one of them
	// also admits the LB IPs as sources (the node reaching its own LB VIP).
	NodeIPs []netip.Addr
}

// Plan is the desired kernel state of one family.
type Plan struct {
	Servers map[VSKey]*VirtualServer
	// VIPs are the addresses bound to kube-ipvs0: ClusterIPs, externalIPs, LB IPs.
	VIPs []netip.Addr
	Sets Sets
	// Gaps lists, per Service port, the semantics this mode cannot carry for it (see
	// docs/ipvs.md); the proxier logs each once.
	Gaps map[string][]string
	// NoLocalEndpoints counts ports whose Local policy has no local endpoint.
	NoLocalEndpoints map[string]int
}

// BuildPlan computes the desired state. It is pure.
func BuildPlan(in PlanInput) *Plan {
	p := &Plan{
		Servers:          map[VSKey]*VirtualServer{},
		Sets:             newSets(in.Family),
		Gaps:             map[string][]string{},
		NoLocalEndpoints: map[string]int{"internal": 0, "external": 0},
	}
	vips := map[netip.Addr]bool{}
	for _, sp := range in.Snapshot.Services {
		clusterIP, ok := sp.ClusterIP(in.Family)
		if !ok {
			continue
		}
		p.addServicePort(in, sp, clusterIP, vips)
	}
	for ip := range vips {
		p.VIPs = append(p.VIPs, ip)
		p.Sets[setName(in.Family, setIPVSIPs)] = append(p.Sets[setName(in.Family, setIPVSIPs)], ip.String())
	}
	sort.Slice(p.VIPs, func(i, j int) bool { return p.VIPs[i].Less(p.VIPs[j]) })
	p.Sets.normalize()
	return p
}

func (p *Plan) addServicePort(in PlanInput, sp *model.ServicePort, clusterIP netip.Addr, vips map[netip.Addr]bool) {
	f := in.Family
	name := sp.Name.String()
	proto := sp.ProtocolLower()
	set := func(base string, member string) { p.Sets[setName(f, base)] = append(p.Sets[setName(f, base)], member) }
	plan := model.PlanPort(sp, in.Snapshot.Endpoints[sp.Name], in.Snapshot.Node, f)
	sets := plan.Sets

	internal := sets.Cluster
	if sp.InternalPolicyLocal {
		internal = sets.Local
	}
	external := sets.Cluster
	if sp.ExternalPolicyLocal {
		external = sets.Local
	}
	externalIPs, lbIPs, accessible := plan.ExternalIPs, plan.LBIPs, plan.ExternallyReachable

	p.noteGaps(sp, sets, internal, external, accessible, len(lbIPs) > 0)

	add := func(ip netip.Addr, port int32, dests []*model.Endpoint) {
		key := VSKey{Addr: ip, Protocol: sp.Protocol, Port: uint16(port)}
		vs := &VirtualServer{Key: key, Scheduler: in.Scheduler, Service: name}
		if sp.StickyMaxAgeSeconds > 0 {
			vs.PersistenceSeconds = uint32(sp.StickyMaxAgeSeconds)
		}
		for _, e := range dests {
			vs.Destinations = append(vs.Destinations, e.AddrPort())
		}
		sort.Slice(vs.Destinations, func(i, j int) bool { return vs.Destinations[i].Compare(vs.Destinations[j]) < 0 })
		p.Servers[key] = vs
	}

	// The ClusterIP.
	vips[clusterIP] = true
	add(clusterIP, sp.Port, internal)
	set(setClusterIP, ipPort(clusterIP, proto, sp.Port))

	// externalIPs: masqueraded unless externalTrafficPolicy is Local.
	for _, ip := range externalIPs {
		vips[ip] = true
		add(ip, sp.Port, external)
		if sp.ExternalPolicyLocal {
			set(setExternalIPLocal, ipPort(ip, proto, sp.Port))
		} else {
			set(setExternalIP, ipPort(ip, proto, sp.Port))
		}
	}

	// LoadBalancer ingress IPs, with their source ranges.
	ranges, firewalled := plan.SourceRanges, plan.Firewalled
	for _, ip := range lbIPs {
		vips[ip] = true
		add(ip, sp.Port, external)
		entry := ipPort(ip, proto, sp.Port)
		set(setLoadBalancer, entry)
		if sp.ExternalPolicyLocal {
			set(setLoadBalancerLocal, entry)
		}
		if !firewalled {
			continue
		}
		set(setLoadBalancerFW, entry)
		fromNode := false
		for _, r := range ranges {
			set(setLBSourceCIDR, entry+","+r.String())
			for _, n := range in.NodeIPs {
				fromNode = fromNode || r.Contains(n)
			}
		}
		// The node reaching its own LB VIP has the VIP as source (it is bound to
		// kube-ipvs0), so a range admitting the node admits the VIP too.
		if fromNode {
			set(setLBSourceIP, entry+","+ip.String())
		}
	}

	// The NodePort: one virtual server per node address.
	if sp.NodePort != 0 {
		for _, ip := range in.NodePortIPs {
			add(ip, sp.NodePort, external)
		}
		switch sp.Protocol {
		case v1.ProtocolTCP, v1.ProtocolUDP:
			all, local := setNodePortTCP, setNodePortLocalTCP
			if sp.Protocol == v1.ProtocolUDP {
				all, local = setNodePortUDP, setNodePortLocalUDP
			}
			set(all, fmt.Sprint(sp.NodePort))
			if sp.ExternalPolicyLocal {
				set(local, fmt.Sprint(sp.NodePort))
			}
		case v1.ProtocolSCTP:
			for _, ip := range in.NodePortIPs {
				set(setNodePortSCTP, ipPort(ip, proto, sp.NodePort))
				if sp.ExternalPolicyLocal {
					set(setNodePortLocalSCTP, ipPort(ip, proto, sp.NodePort))
				}
			}
		}
	}
	if sp.HealthCheckNodePort != 0 {
		set(setHealthCheckNodePort, fmt.Sprint(sp.HealthCheckNodePort))
	}

	// Hairpin: a local endpoint reaching itself through the Service is masqueraded.
	for _, e := range sets.AllReachable {
		if e.IsLocal {
			set(setLoopBack, fmt.Sprintf("%s,%s:%d,%s", e.IP, proto, e.Port, e.IP))
		}
	}
}

// noteGaps records the semantics upstream's iptables mode has for this port that
// virtual servers cannot express.
func (p *Plan) noteGaps(sp *model.ServicePort, sets model.EndpointSets, internal, external []*model.Endpoint, accessible, _ bool) {
	name := sp.Name.String()
	gap := func(s string) { p.Gaps[name] = append(p.Gaps[name], s) }
	if sets.HasAny && len(internal) == 0 && sp.InternalPolicyLocal {
		p.NoLocalEndpoints["internal"]++
		gap("internalTrafficPolicy Local without local endpoints: the ClusterIP answers ICMP port-unreachable (refused) instead of dropping")
	}
	if accessible && sp.ExternalPolicyLocal {
		if sets.HasAny && len(external) == 0 {
			p.NoLocalEndpoints["external"]++
			gap("externalTrafficPolicy Local without local endpoints: external addresses answer ICMP port-unreachable (refused) instead of dropping")
		}
		gap("externalTrafficPolicy Local: pods and the node itself also reach only local endpoints through external addresses (no short-circuit to the cluster-wide set)")
	}
}
