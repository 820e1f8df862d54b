package proxy

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/kproxy/kproxy/internal/conntrack"
	"github.com/kproxy/kproxy/internal/model"
)

// A UDP Service and its endpoints that arrive in the same sync: datagrams sent to the
// ClusterIP before the rules existed left entries without DNAT, so the sync must clean
// flows to the new port's addresses, keeping only those that reach an endpoint.
func TestStaleFlowsCleanNewPort(t *testing.T) {
	nn := types.NamespacedName{Namespace: "ns", Name: "dns"}
	name := model.ServicePortName{NamespacedName: nn, Port: "dns", Protocol: v1.ProtocolUDP}
	sp := &model.ServicePort{Name: name, Protocol: v1.ProtocolUDP, Port: 53, NodePort: 30053,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}}
	ep := &model.Endpoint{IP: netip.MustParseAddr("10.244.1.5"), Port: 5353, Ready: true, Serving: true}
	snap := &model.Snapshot{
		Services:       map[model.ServicePortName]*model.ServicePort{name: sp},
		Endpoints:      map[model.ServicePortName][]*model.Endpoint{name: {ep}},
		PortsByService: map[types.NamespacedName][]*model.ServicePort{nn: {sp}},
		Changed:        map[types.NamespacedName]struct{}{nn: {}},
		PreviousPorts:  map[types.NamespacedName][]*model.ServicePort{},
	}
	targets := StaleFlows(snap, model.IPv4)
	var byIP, byNodePort bool
	for _, tg := range targets {
		if tg.Protocol != unix.IPPROTO_UDP {
			t.Errorf("target %+v: protocol %d, want UDP", tg, tg.Protocol)
		}
		if _, ok := tg.Keep[ep.AddrPort()]; !ok {
			t.Errorf("target %+v does not keep the endpoint %s", tg, ep.AddrPort())
		}
		if len(tg.ServiceIPs) == 1 && tg.ServiceIPs[0] == sp.ClusterIPs[0] && tg.Port == 53 {
			byIP = true
		}
		if tg.NodePort == 30053 {
			byNodePort = true
		}
	}
	if !byIP || !byNodePort {
		t.Errorf("StaleFlows for a new UDP port = %+v, want targets for 10.96.0.10:53 and NodePort 30053 keeping %s", targets, ep.AddrPort())
	}
	// An unchanged TCP-only Service yields nothing.
	sp.Protocol, sp.Name.Protocol = v1.ProtocolTCP, v1.ProtocolTCP
	if got := StaleFlows(snap, model.IPv4); len(got) != 0 {
		t.Errorf("StaleFlows for a TCP port = %+v, want none", got)
	}
}

func TestStaleFlowsNewlyServedTCP(t *testing.T) {
	tr := model.NewTracker("node1", nil, nil)
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec: v1.ServiceSpec{ClusterIP: "10.96.0.40", ClusterIPs: []string{"10.96.0.40"}, Ports: []v1.ServicePort{{Name: "http", Port: 80, Protocol: v1.ProtocolTCP}}}}
	slice := func(ip string) *discovery.EndpointSlice {
		return &discovery.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "web-1", Labels: map[string]string{discovery.LabelServiceName: "web"}},
			AddressType: discovery.AddressTypeIPv4,
			Ports:       []discovery.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080)), Protocol: ptr.To(v1.ProtocolTCP)}},
			Endpoints:   []discovery.Endpoint{{Addresses: []string{ip}, Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}}},
		}
	}
	tcpTargets := func(ts []conntrack.Target) []conntrack.Target {
		var out []conntrack.Target
		for _, t := range ts {
			if t.UnNATedOnly {
				out = append(out, t)
			}
		}
		return out
	}
	// Without endpoints there are no rules yet: nothing to clean.
	tr.OnServiceUpsert(svc)
	if got := tcpTargets(StaleFlows(tr.Snapshot(), model.IPv4)); len(got) != 0 {
		t.Errorf("no endpoints: %v, want none", got)
	}
	// Endpoints appear: the ClusterIP just got rules.
	tr.OnEndpointSliceUpsert(slice("10.244.2.11"))
	got := tcpTargets(StaleFlows(tr.Snapshot(), model.IPv4))
	if len(got) != 1 || got[0].ServiceIPs[0].String() != "10.96.0.40" || got[0].Port != 80 {
		t.Fatalf("endpoints appeared: %+v, want one never-NATed target for 10.96.0.40:80", got)
	}
	// An endpoint change on an address already served lists nothing: busy nodes must
	// not read the whole conntrack table for every endpoint change.
	tr.OnEndpointSliceUpsert(slice("10.244.2.12"))
	if got := tcpTargets(StaleFlows(tr.Snapshot(), model.IPv4)); len(got) != 0 {
		t.Errorf("endpoint moved: %v, want none", got)
	}
}

// The cleaner keeps exactly the endpoints the rules of the family use (the plan's):
// in a dual-stack Service an IPv6 endpoint without hints must not switch off the IPv4
// endpoints' topology hints, or flows to an IPv4 endpoint the rules no longer use
// would be kept.
func TestStaleFlowsKeepThePlansEndpointsPerFamily(t *testing.T) {
	nn := types.NamespacedName{Namespace: "ns", Name: "dns"}
	name := model.ServicePortName{NamespacedName: nn, Port: "dns", Protocol: v1.ProtocolUDP}
	sp := &model.ServicePort{Name: name, Protocol: v1.ProtocolUDP, Port: 53,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:96::10")}}
	near := &model.Endpoint{IP: netip.MustParseAddr("10.244.1.5"), Port: 53, Ready: true, Serving: true, ZoneHints: []string{"zone-a"}}
	far := &model.Endpoint{IP: netip.MustParseAddr("10.244.2.5"), Port: 53, Ready: true, Serving: true, ZoneHints: []string{"zone-b"}}
	v6 := &model.Endpoint{IP: netip.MustParseAddr("fd00:244::5"), Port: 53, Ready: true, Serving: true}
	snap := &model.Snapshot{
		Services:          map[model.ServicePortName]*model.ServicePort{name: sp},
		Endpoints:         map[model.ServicePortName][]*model.Endpoint{name: {near, far, v6}},
		PortsByService:    map[types.NamespacedName][]*model.ServicePort{nn: {sp}},
		Changed:           map[types.NamespacedName]struct{}{nn: {}},
		PreviousPorts:     map[types.NamespacedName][]*model.ServicePort{nn: {sp}},
		PreviousEndpoints: map[model.ServicePortName][]*model.Endpoint{name: {near, far, v6}},
		Node:              &model.Node{Name: "node1", Labels: map[string]string{v1.LabelTopologyZone: "zone-a"}},
	}
	targets := StaleFlows(snap, model.IPv4)
	if len(targets) != 1 || len(targets[0].ServiceIPs) != 1 || targets[0].ServiceIPs[0].String() != "10.96.0.10" {
		t.Fatalf("IPv4 targets = %+v, want one for 10.96.0.10", targets)
	}
	if _, ok := targets[0].Keep[near.AddrPort()]; !ok || len(targets[0].Keep) != 1 {
		t.Errorf("IPv4 keeps %v, want only %s (the zone-a endpoint the rules use)", targets[0].Keep, near.AddrPort())
	}
	targets = StaleFlows(snap, model.IPv6)
	if len(targets) != 1 || len(targets[0].Keep) != 1 {
		t.Fatalf("IPv6 targets = %+v, want one keeping %s", targets, v6.AddrPort())
	}
	if _, ok := targets[0].Keep[v6.AddrPort()]; !ok {
		t.Errorf("IPv6 keeps %v, want %s", targets[0].Keep, v6.AddrPort())
	}
}
