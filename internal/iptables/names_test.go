package iptables

import (
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/model"
)

// The expected names are upstream's, from the reference ruleset.
func TestChainNamesMatchUpstream(t *testing.T) {
	sp := &model.ServicePort{
		Name:     model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns1", Name: "svc1"}, Port: "p80", Protocol: v1.ProtocolTCP},
		Protocol: v1.ProtocolTCP,
	}
	if got := chainsFor(sp).svc; got != "KUBE-SVC-XPGD46QRK7WJZT7O" {
		t.Errorf("svc chain = %s, want KUBE-SVC-XPGD46QRK7WJZT7O", got)
	}
	ep := &model.Endpoint{IP: netip.MustParseAddr("10.180.0.1"), Port: 80}
	if got := endpointChain(sp, ep); got != "KUBE-SEP-SXIVWICOYRO3J4NJ" {
		t.Errorf("sep chain = %s, want KUBE-SEP-SXIVWICOYRO3J4NJ", got)
	}
}
