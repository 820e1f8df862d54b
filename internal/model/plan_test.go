package model

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

// The plan is the one place where a Service port's semantics are decided, so its table
// states upstream kube-proxy's behaviour literally: each want is written from the
// Service API's rules (KEP-1669 terminating endpoints, KEP-2086 internalTrafficPolicy,
// KEP-4444 trafficDistribution, the LoadBalancer source-range rules), not from output.

// ep is an endpoint in a compact notation: "IP[:port] flags...", flags among local
// (on this node), ready (default when no condition flag), serving, terminating,
// notready, zone=Z (its zone hint), node=N (its node hint).
func ep(spec string) *Endpoint {
	f := strings.Fields(spec)
	e := &Endpoint{Port: 80}
	if ap, err := netip.ParseAddrPort(f[0]); err == nil {
		e.IP, e.Port = ap.Addr(), int32(ap.Port())
	} else {
		e.IP = netip.MustParseAddr(f[0])
	}
	cond := false
	for _, w := range f[1:] {
		switch {
		case w == "local":
			e.IsLocal, e.NodeName = true, "node1"
		case w == "ready":
			e.Ready, e.Serving, cond = true, true, true
		case w == "serving":
			e.Serving, cond = true, true
		case w == "terminating":
			e.Terminating, cond = true, true
		case w == "notready":
			cond = true
		case strings.HasPrefix(w, "zone="):
			e.ZoneHints = append(e.ZoneHints, strings.TrimPrefix(w, "zone="))
		case strings.HasPrefix(w, "node="):
			e.NodeHints = append(e.NodeHints, strings.TrimPrefix(w, "node="))
		default:
			panic("unknown endpoint flag " + w)
		}
	}
	if !cond {
		e.Ready, e.Serving = true, true
	}
	if e.NodeName == "" {
		e.NodeName = "node2"
	}
	return e
}

func eps(specs ...string) []*Endpoint {
	out := make([]*Endpoint, len(specs))
	for i, s := range specs {
		out[i] = ep(s)
	}
	return out
}

// render spells a plan in the notation of the table's wants.
func render(p PortPlan) string {
	var b strings.Builder
	list := func(eps []*Endpoint) string {
		s := make([]string, len(eps))
		for i, e := range eps {
			s[i] = e.String()
		}
		return "[" + strings.Join(s, " ") + "]"
	}
	tgt := func(t Target) string {
		pol := "cluster"
		if t.Verdict == None {
			return "none"
		}
		if t.Local {
			pol = "local"
		}
		return t.Verdict.String() + "/" + pol
	}
	fmt.Fprintf(&b, "cluster=%s local=%s all=%s internal=%s external=%s",
		list(p.ClusterEndpoints), list(p.LocalEndpoints), list(p.AllEndpoints), tgt(p.Internal), tgt(p.External))
	if p.ExternalDispatch {
		b.WriteString(" dispatch")
		if p.MasqueradeExternal {
			b.WriteString(" masq")
		}
		if p.ShortCircuit {
			b.WriteString(" shortcircuit")
		}
	}
	if p.Firewalled {
		fmt.Fprintf(&b, " firewall=%v", p.SourceRanges)
		if len(p.SourceLBIPs) > 0 {
			fmt.Fprintf(&b, " lbsources=%v", p.SourceLBIPs)
		}
	}
	return b.String()
}

func TestPlanPort(t *testing.T) {
	node1 := &Node{Name: "node1", Labels: map[string]string{v1.LabelTopologyZone: "zone-a"},
		Addresses: []netip.Addr{netip.MustParseAddr("192.168.0.2"), netip.MustParseAddr("fd00::2")}}
	clusterIP := func(*ServicePort) {}
	nodePort := func(sp *ServicePort) { sp.NodePort = 30080 }
	etpLocal := func(sp *ServicePort) { sp.NodePort, sp.ExternalPolicyLocal = 30080, true }
	itpLocal := func(sp *ServicePort) { sp.InternalPolicyLocal = true }
	both := func(fs ...func(*ServicePort)) func(*ServicePort) {
		return func(sp *ServicePort) {
			for _, f := range fs {
				f(sp)
			}
		}
	}
	lb := func(ranges ...string) func(*ServicePort) {
		return func(sp *ServicePort) {
			sp.NodePort = 30080
			sp.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr("1.2.3.4"), netip.MustParseAddr("2001:db8::4")}
			for _, r := range ranges {
				sp.LoadBalancerSourceRanges = append(sp.LoadBalancerSourceRanges, netip.MustParsePrefix(r))
			}
		}
	}
	cases := []struct {
		name   string
		port   func(*ServicePort)
		eps    []*Endpoint
		node   *Node
		family Family
		want   string
	}{
		// Which endpoints: ready first, then serving-terminating, never the rest.
		{name: "ready endpoints", port: clusterIP, eps: eps("10.0.0.1", "10.0.0.2 local"),
			want: "cluster=[10.0.0.1:80 10.0.0.2:80] local=[] all=[10.0.0.1:80 10.0.0.2:80] internal=forward/cluster external=none"},
		{name: "no endpoints rejects", port: nodePort, eps: nil,
			want: "cluster=[] local=[] all=[] internal=reject/cluster external=reject/cluster"},
		{name: "not ready and not serving rejects", port: clusterIP, eps: eps("10.0.0.1 notready", "10.0.0.2 terminating"),
			want: "cluster=[] local=[] all=[] internal=reject/cluster external=none"},
		{name: "serving-terminating fallback", port: clusterIP, eps: eps("10.0.0.1 serving terminating", "10.0.0.2 terminating", "10.0.0.3 notready"),
			want: "cluster=[10.0.0.1:80] local=[] all=[10.0.0.1:80] internal=forward/cluster external=none"},
		{name: "ready wins over terminating", port: clusterIP, eps: eps("10.0.0.1 serving terminating", "10.0.0.3"),
			want: "cluster=[10.0.0.3:80] local=[] all=[10.0.0.3:80] internal=forward/cluster external=none"},
		{name: "serving but not ready and not terminating is unused", port: clusterIP, eps: eps("10.0.0.1 serving"),
			want: "cluster=[] local=[] all=[] internal=reject/cluster external=none"},

		// externalTrafficPolicy.
		{name: "NodePort, Cluster policy masquerades", port: nodePort, eps: eps("10.0.0.1", "10.0.0.2 local"),
			want: "cluster=[10.0.0.1:80 10.0.0.2:80] local=[] all=[10.0.0.1:80 10.0.0.2:80] internal=forward/cluster external=forward/cluster dispatch masq"},
		{name: "ETP Local with a local endpoint", port: etpLocal, eps: eps("10.0.0.1", "10.0.0.2 local"),
			want: "cluster=[10.0.0.1:80 10.0.0.2:80] local=[10.0.0.2:80] all=[10.0.0.1:80 10.0.0.2:80] internal=forward/cluster external=forward/local dispatch shortcircuit"},
		{name: "ETP Local without a local endpoint drops external traffic", port: etpLocal, eps: eps("10.0.0.1"),
			want: "cluster=[10.0.0.1:80] local=[] all=[10.0.0.1:80] internal=forward/cluster external=drop/local dispatch shortcircuit"},
		{name: "ETP Local without endpoints rejects", port: etpLocal, eps: eps("10.0.0.1 notready"),
			want: "cluster=[] local=[] all=[] internal=reject/cluster external=reject/local"},
		{name: "ETP Local: local set falls back to local serving-terminating on its own", port: etpLocal,
			eps:  eps("10.0.0.1", "10.0.0.2 local serving terminating", "10.0.0.3 local terminating"),
			want: "cluster=[10.0.0.1:80] local=[10.0.0.2:80] all=[10.0.0.1:80 10.0.0.2:80] internal=forward/cluster external=forward/local dispatch shortcircuit"},
		{name: "ETP Local: remote terminating endpoints do not count as local", port: etpLocal,
			eps:  eps("10.0.0.1 serving terminating"),
			want: "cluster=[10.0.0.1:80] local=[] all=[10.0.0.1:80] internal=forward/cluster external=drop/local dispatch shortcircuit"},
		{name: "externalIPs make the port externally reachable", port: func(sp *ServicePort) {
			sp.ExternalIPs = []netip.Addr{netip.MustParseAddr("203.0.113.7")}
			sp.ExternalPolicyLocal = true
		}, eps: eps("10.0.0.1 local"),
			want: "cluster=[10.0.0.1:80] local=[10.0.0.1:80] all=[10.0.0.1:80] internal=forward/cluster external=forward/local dispatch shortcircuit"},

		// internalTrafficPolicy.
		{name: "ITP Local with local and remote", port: itpLocal, eps: eps("10.0.0.1", "10.0.0.2 local"),
			want: "cluster=[] local=[10.0.0.2:80] all=[10.0.0.2:80] internal=forward/local external=none"},
		{name: "ITP Local without a local endpoint drops", port: itpLocal, eps: eps("10.0.0.1"),
			want: "cluster=[] local=[] all=[] internal=drop/local external=none"},
		{name: "ITP Local without endpoints rejects", port: itpLocal, eps: nil,
			want: "cluster=[] local=[] all=[] internal=reject/local external=none"},
		{name: "ITP Local and ETP Local, remote only: both drop, no short-circuit", port: both(itpLocal, etpLocal), eps: eps("10.0.0.1"),
			want: "cluster=[] local=[] all=[] internal=drop/local external=drop/local dispatch"},
		{name: "ITP Local, NodePort with Cluster policy", port: both(itpLocal, nodePort), eps: eps("10.0.0.1", "10.0.0.2 local"),
			want: "cluster=[10.0.0.1:80 10.0.0.2:80] local=[10.0.0.2:80] all=[10.0.0.1:80 10.0.0.2:80] internal=forward/local external=forward/cluster dispatch masq"},

		// Topology: hints narrow the Cluster set only, and only when every ready
		// endpoint has them and one names this node (or its zone).
		{name: "zone hints", port: clusterIP, node: node1, eps: eps("10.0.0.1 zone=zone-a", "10.0.0.2 zone=zone-b", "10.0.0.3 zone=zone-a"),
			want: "cluster=[10.0.0.1:80 10.0.0.3:80] local=[] all=[10.0.0.1:80 10.0.0.3:80] internal=forward/cluster external=none"},
		{name: "a ready endpoint without hints disables them", port: clusterIP, node: node1, eps: eps("10.0.0.1 zone=zone-a", "10.0.0.2"),
			want: "cluster=[10.0.0.1:80 10.0.0.2:80] local=[] all=[10.0.0.1:80 10.0.0.2:80] internal=forward/cluster external=none"},
		{name: "a not-ready endpoint without hints does not", port: clusterIP, node: node1, eps: eps("10.0.0.1 zone=zone-a", "10.0.0.2 zone=zone-b", "10.0.0.3 notready"),
			want: "cluster=[10.0.0.1:80] local=[] all=[10.0.0.1:80] internal=forward/cluster external=none"},
		{name: "no hint for this zone: every endpoint", port: clusterIP, node: node1, eps: eps("10.0.0.1 zone=zone-b", "10.0.0.2 zone=zone-c"),
			want: "cluster=[10.0.0.1:80 10.0.0.2:80] local=[] all=[10.0.0.1:80 10.0.0.2:80] internal=forward/cluster external=none"},
		{name: "node hints win over zone hints", port: clusterIP, node: node1, eps: eps("10.0.0.1 local zone=zone-a node=node1", "10.0.0.2 zone=zone-a node=node2"),
			want: "cluster=[10.0.0.1:80] local=[] all=[10.0.0.1:80] internal=forward/cluster external=none"},
		{name: "no node hint for this node: zone hints", port: clusterIP, node: node1, eps: eps("10.0.0.1 zone=zone-a node=node3", "10.0.0.2 zone=zone-b node=node2"),
			want: "cluster=[10.0.0.1:80] local=[] all=[10.0.0.1:80] internal=forward/cluster external=none"},
		{name: "hints ignored without a Node", port: clusterIP, node: nil, eps: eps("10.0.0.1 zone=zone-a", "10.0.0.2 zone=zone-b"),
			want: "cluster=[10.0.0.1:80 10.0.0.2:80] local=[] all=[10.0.0.1:80 10.0.0.2:80] internal=forward/cluster external=none"},
		{name: "hints do not narrow the Local set", port: etpLocal, node: node1, eps: eps("10.0.0.1 local zone=zone-b", "10.0.0.2 zone=zone-a"),
			want: "cluster=[10.0.0.2:80] local=[10.0.0.1:80] all=[10.0.0.2:80 10.0.0.1:80] internal=forward/cluster external=forward/local dispatch shortcircuit"},
		{name: "terminating fallback ignores hints", port: clusterIP, node: node1, eps: eps("10.0.0.1 serving terminating zone=zone-b"),
			want: "cluster=[10.0.0.1:80] local=[] all=[10.0.0.1:80] internal=forward/cluster external=none"},

		// Dual-stack: each family is planned from its own endpoints only.
		{name: "IPv6 family of a dual-stack port", port: nodePort, family: IPv6, eps: eps("10.0.0.1", "[fd00::1]:80", "[fd00::2]:80 local"),
			want: "cluster=[[fd00::1]:80 [fd00::2]:80] local=[] all=[[fd00::1]:80 [fd00::2]:80] internal=forward/cluster external=forward/cluster dispatch masq"},
		{name: "IPv4 without IPv4 endpoints rejects though IPv6 has some", port: nodePort, family: IPv4, eps: eps("[fd00::1]:80"),
			want: "cluster=[] local=[] all=[] internal=reject/cluster external=reject/cluster"},
		{name: "hints of the other family do not disable this family's", port: clusterIP, node: node1, family: IPv4,
			eps:  eps("10.0.0.1 zone=zone-a", "10.0.0.2 zone=zone-b", "[fd00::1]:80"),
			want: "cluster=[10.0.0.1:80] local=[] all=[10.0.0.1:80] internal=forward/cluster external=none"},
		{name: "IPv6 ETP Local counts IPv6 local endpoints only", port: etpLocal, family: IPv6, eps: eps("10.0.0.1 local", "[fd00::1]:80"),
			want: "cluster=[[fd00::1]:80] local=[] all=[[fd00::1]:80] internal=forward/cluster external=drop/local dispatch shortcircuit"},

		// loadBalancerSourceRanges.
		{name: "source ranges firewall the LB IPs", port: lb("10.1.0.0/16", "172.16.0.0/12"), node: node1, eps: eps("10.0.0.1"),
			want: "cluster=[10.0.0.1:80] local=[] all=[10.0.0.1:80] internal=forward/cluster external=forward/cluster dispatch masq firewall=[10.1.0.0/16 172.16.0.0/12]"},
		{name: "a range holding a node IP admits the LB IPs", port: lb("192.168.0.0/24"), node: node1, eps: eps("10.0.0.1"),
			want: "cluster=[10.0.0.1:80] local=[] all=[10.0.0.1:80] internal=forward/cluster external=forward/cluster dispatch masq firewall=[192.168.0.0/24] lbsources=[1.2.3.4]"},
		{name: "an IPv4-mapped node address counts as IPv4", port: lb("192.168.0.0/24"), eps: eps("10.0.0.1"),
			node: &Node{Name: "node1", Addresses: []netip.Addr{netip.MustParseAddr("::ffff:192.168.0.2")}},
			want: "cluster=[10.0.0.1:80] local=[] all=[10.0.0.1:80] internal=forward/cluster external=forward/cluster dispatch masq firewall=[192.168.0.0/24] lbsources=[1.2.3.4]"},
		{name: "a range admitting everything restricts nothing", port: lb("10.1.0.0/16", "0.0.0.0/0"), node: node1, eps: eps("10.0.0.1"),
			want: "cluster=[10.0.0.1:80] local=[] all=[10.0.0.1:80] internal=forward/cluster external=forward/cluster dispatch masq"},
		{name: "ranges of the other family only restrict nothing here", port: lb("fd00::/64"), node: node1, eps: eps("10.0.0.1"),
			want: "cluster=[10.0.0.1:80] local=[] all=[10.0.0.1:80] internal=forward/cluster external=forward/cluster dispatch masq"},
		{name: "IPv6 ranges with an IPv6 node address", port: lb("fd00::/64", "10.1.0.0/16"), node: node1, family: IPv6, eps: eps("[fd00::9]:80"),
			want: "cluster=[[fd00::9]:80] local=[] all=[[fd00::9]:80] internal=forward/cluster external=forward/cluster dispatch masq firewall=[fd00::/64] lbsources=[2001:db8::4]"},
		{name: "ranges without LB IPs restrict nothing", port: func(sp *ServicePort) {
			sp.NodePort = 30080
			sp.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
		}, node: node1, eps: eps("10.0.0.1"),
			want: "cluster=[10.0.0.1:80] local=[] all=[10.0.0.1:80] internal=forward/cluster external=forward/cluster dispatch masq"},
		{name: "firewalled without endpoints", port: lb("10.1.0.0/16"), node: node1, eps: nil,
			want: "cluster=[] local=[] all=[] internal=reject/cluster external=reject/cluster firewall=[10.1.0.0/16]"},
		{name: "firewalled with ETP Local", port: both(lb("10.1.0.0/16"), func(sp *ServicePort) { sp.ExternalPolicyLocal = true }), node: node1, eps: eps("10.0.0.1 local"),
			want: "cluster=[10.0.0.1:80] local=[10.0.0.1:80] all=[10.0.0.1:80] internal=forward/cluster external=forward/local dispatch shortcircuit firewall=[10.1.0.0/16]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sp := &ServicePort{Name: ServicePortName{Port: "http"}, Port: 80, Protocol: v1.ProtocolTCP,
				ClusterIPs: []netip.Addr{netip.MustParseAddr("172.30.0.1"), netip.MustParseAddr("fd00:30::1")}}
			c.port(sp)
			f := c.family
			if f == 0 {
				f = IPv4
			}
			if got := render(PlanPort(sp, c.eps, c.node, f)); got != c.want {
				t.Errorf("plan\n got: %s\nwant: %s", got, c.want)
			}
		})
	}
}

func TestPlanPortAddresses(t *testing.T) {
	sp := &ServicePort{Port: 53, NodePort: 30053, Protocol: v1.ProtocolUDP, StickyMaxAgeSeconds: 10800, HealthCheckNodePort: 32000,
		ClusterIPs:      []netip.Addr{netip.MustParseAddr("::ffff:172.30.0.9"), netip.MustParseAddr("fd00:30::9")},
		ExternalIPs:     []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8::1")},
		LoadBalancerIPs: []netip.Addr{netip.MustParseAddr("198.51.100.1")}}
	p := PlanPort(sp, nil, nil, IPv4)
	if got := fmt.Sprint(p.ClusterIP, p.ExternalIPs, p.LBIPs, p.Port, p.NodePort, p.Affinity, p.HealthCheckNodePort, p.ExternallyReachable); got != "172.30.0.9 [203.0.113.1] [198.51.100.1] 53 30053 3h0m0s 32000 true" {
		t.Errorf("IPv4 addresses: %s", got)
	}
	p = PlanPort(sp, nil, nil, IPv6)
	if got := fmt.Sprint(p.ClusterIP, p.ExternalIPs, p.LBIPs); got != "fd00:30::9 [2001:db8::1] []" {
		t.Errorf("IPv6 addresses: %s", got)
	}
	sp.ClusterIPs = sp.ClusterIPs[:1]
	if p := PlanPort(sp, nil, nil, IPv6); p.ClusterIP.IsValid() {
		t.Errorf("single-stack IPv4 port planned an IPv6 ClusterIP %s", p.ClusterIP)
	}
}

func TestPlanAdmits(t *testing.T) {
	node := &Node{Name: "node1", Addresses: []netip.Addr{netip.MustParseAddr("192.168.0.2")}}
	sp := &ServicePort{Port: 80, ClusterIPs: []netip.Addr{netip.MustParseAddr("172.30.0.1")},
		LoadBalancerIPs:          []netip.Addr{netip.MustParseAddr("1.2.3.4")},
		LoadBalancerSourceRanges: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/24"), netip.MustParsePrefix("10.9.0.0/16")}}
	p := PlanPort(sp, nil, node, IPv4)
	for src, want := range map[string]bool{
		"192.168.0.77": true, "10.9.3.3": true, "1.2.3.4": true, "::ffff:10.9.0.1": true,
		"10.10.0.1": false, "192.168.1.1": false, "1.2.3.5": false,
	} {
		if got := p.Admits(netip.MustParseAddr(src)); got != want {
			t.Errorf("Admits(%s) = %v, want %v", src, got, want)
		}
	}
	sp.LoadBalancerSourceRanges = nil
	if p := PlanPort(sp, nil, node, IPv4); !p.Admits(netip.MustParseAddr("10.10.0.1")) {
		t.Errorf("a port without source ranges refused a source")
	}
}

func TestLocalReadyEndpoints(t *testing.T) {
	got := LocalReadyEndpoints(eps("10.0.0.1 local", "10.0.0.1:81 local", "10.0.0.2 local serving terminating", "10.0.0.3", "10.0.0.4 local notready", "10.0.0.5 local"))
	if fmt.Sprint(got) != "[10.0.0.1 10.0.0.5]" {
		t.Errorf("local ready endpoints = %v, want [10.0.0.1 10.0.0.5]", got)
	}
}

// Only endpoints on this node can reach themselves through this node's rules; the
// plan lists those of the used sets (a local endpoint the policy leaves out needs no
// hairpin rule).
func TestPlanHairpin(t *testing.T) {
	sp := &ServicePort{Port: 80, ClusterIPs: []netip.Addr{netip.MustParseAddr("172.30.0.1")}}
	got := PlanPort(sp, eps("10.0.0.1 local", "10.0.0.2", "10.0.0.3 local notready", "10.0.0.4 local"), nil, IPv4).Hairpin
	if fmt.Sprint(got) != "[10.0.0.1:80 10.0.0.4:80]" {
		t.Errorf("hairpin = %v, want [10.0.0.1:80 10.0.0.4:80]", got)
	}
}
