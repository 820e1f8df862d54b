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
		p.addServicePort(in, sp, vips)
	}
	for ip := range vips {
		p.VIPs = append(p.VIPs, ip)
		p.Sets[setName(in.Family, setIPVSIPs)] = append(p.Sets[setName(in.Family, setIPVSIPs)], ip.String())
	}
	sort.Slice(p.VIPs, func(i, j int) bool { return p.VIPs[i].Less(p.VIPs[j]) })
	p.Sets.normalize()
	return p
}

func (p *Plan) addServicePort(in PlanInput, sp *model.ServicePort, vips map[netip.Addr]bool) {
	f := in.Family
	name := sp.Name.String()
	proto := sp.ProtocolLower()
	set := func(base string, member string) { p.Sets[setName(f, base)] = append(p.Sets[setName(f, base)], member) }
	plan := model.PlanPort(sp, in.Snapshot.Endpoints[sp.Name], in.Snapshot.Node, f)
	if !plan.ClusterIP.IsValid() {
		return // the port has no ClusterIP in this family: nothing of it is programmed
	}
	// Virtual servers cannot drop or reject: a target without endpoints gets a
	// virtual server without real servers, which refuses (see noteGaps).
	internal, external := plan.Internal.Endpoints, plan.External.Endpoints

	p.noteGaps(sp.Name.String(), &plan)

	add := func(ip netip.Addr, port int32, dests []*model.Endpoint) {
		key := VSKey{Addr: ip, Protocol: sp.Protocol, Port: uint16(port)}
		vs := &VirtualServer{Key: key, Scheduler: in.Scheduler, Service: name}
		if plan.Affinity > 0 {
			vs.PersistenceSeconds = uint32(plan.Affinity.Seconds())
		}
		for _, e := range dests {
			vs.Destinations = append(vs.Destinations, e.AddrPort())
		}
		sort.Slice(vs.Destinations, func(i, j int) bool { return vs.Destinations[i].Compare(vs.Destinations[j]) < 0 })
		p.Servers[key] = vs
	}

	// The ClusterIP.
	clusterIP := plan.ClusterIP
	vips[clusterIP] = true
	add(clusterIP, sp.Port, internal)
	set(setClusterIP, ipPort(clusterIP, proto, sp.Port))

	// externalIPs: masqueraded unless externalTrafficPolicy is Local.
	for _, ip := range plan.ExternalIPs {
		vips[ip] = true
		add(ip, sp.Port, external)
		if plan.External.Local {
			set(setExternalIPLocal, ipPort(ip, proto, sp.Port))
		} else {
			set(setExternalIP, ipPort(ip, proto, sp.Port))
		}
	}

	// LoadBalancer ingress IPs, with their source ranges.
	for _, ip := range plan.LBIPs {
		vips[ip] = true
		add(ip, sp.Port, external)
		entry := ipPort(ip, proto, sp.Port)
		set(setLoadBalancer, entry)
		if plan.External.Local {
			set(setLoadBalancerLocal, entry)
		}
		if !plan.Firewalled {
			continue
		}
		set(setLoadBalancerFW, entry)
		for _, r := range plan.SourceRanges {
			set(setLBSourceCIDR, entry+","+r.String())
		}
		// The node reaching its own LB VIP has the VIP as source (it is bound to
		// kube-ipvs0): the plan admits the LB IPs as sources then.
		for _, src := range plan.SourceLBIPs {
			set(setLBSourceIP, entry+","+src.String())
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
			if plan.External.Local {
				set(local, fmt.Sprint(sp.NodePort))
			}
		case v1.ProtocolSCTP:
			for _, ip := range in.NodePortIPs {
				set(setNodePortSCTP, ipPort(ip, proto, sp.NodePort))
				if plan.External.Local {
					set(setNodePortLocalSCTP, ipPort(ip, proto, sp.NodePort))
				}
			}
		}
	}
	if plan.HealthCheckNodePort != 0 {
		set(setHealthCheckNodePort, fmt.Sprint(plan.HealthCheckNodePort))
	}

	// Hairpin: a local endpoint reaching itself through the Service is masqueraded.
	for _, e := range plan.Hairpin {
		set(setLoopBack, fmt.Sprintf("%s,%s:%d,%s", e.IP, proto, e.Port, e.IP))
	}
}

// noteGaps records the semantics upstream's iptables mode has for this port that
// virtual servers cannot express.
func (p *Plan) noteGaps(name string, plan *model.PortPlan) {
	gap := func(s string) { p.Gaps[name] = append(p.Gaps[name], s) }
	if plan.Internal.NoLocalEndpoints() {
		p.NoLocalEndpoints["internal"]++
		gap("internalTrafficPolicy Local without local endpoints: the ClusterIP answers ICMP port-unreachable (refused) instead of dropping")
	}
	if plan.External.NoLocalEndpoints() {
		p.NoLocalEndpoints["external"]++
		gap("externalTrafficPolicy Local without local endpoints: external addresses answer ICMP port-unreachable (refused) instead of dropping")
	}
	if plan.Firewalled {
		gap("loadBalancerSourceRanges: the node's own connections to the LB IPs are not filtered (IPVS takes them in LOCAL_OUT, before the firewall chain)")
	}
	if plan.ShortCircuit {
		gap("externalTrafficPolicy Local: pods and the node itself also reach only local endpoints through external addresses (no short-circuit to the cluster-wide set)")
	}
}
