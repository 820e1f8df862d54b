package proxy

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

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
