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

// TestMaximumLengthNames: namespace, Service and port names of 63 characters (the
// API's maximum) still give chain names within the kernel's 28 characters
// (XT_EXTENSION_MAXNAMELEN 29 with the NUL): the hash keeps them at 25.
func TestMaximumLengthNames(t *testing.T) {
	long := func(c string) string {
		s := ""
		for len(s) < 63 {
			s += c
		}
		return s
	}
	sp := &model.ServicePort{
		Name:     model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: long("n"), Name: long("s")}, Port: long("p"), Protocol: v1.ProtocolSCTP},
		Protocol: v1.ProtocolSCTP,
	}
	ep := &model.Endpoint{IP: netip.MustParseAddr("fd00:1111:2222:3333:4444:5555:6666:7777"), Port: 65535}
	c := chainsFor(sp)
	for _, name := range []string{c.svc, c.svl, c.ext, c.fw, endpointChain(sp, ep)} {
		if len(name) > 28 {
			t.Errorf("chain %s: %d characters, the kernel allows 28", name, len(name))
		}
	}
}
