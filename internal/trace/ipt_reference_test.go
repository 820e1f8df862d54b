package trace

import (
	"math"
	"strings"
	"testing"
)

// The packets of reference 2.5 "What the tracer reports", on upstream's ruleset.
func TestUpstreamReferenceRuleset(t *testing.T) {
	dump := readFile(t, "testdata/upstream-2.5.rules")
	runIPTCases(t, dump, fixtureEnv(), []flowCase{
		{name: "pod to ClusterIP", src: "10.0.0.2", dst: "172.30.0.41:80", verdict: VerdictDNAT,
			endpoints: []string{"10.180.0.1:80", "10.180.0.2:80"}},
		{name: "external to NodePort eTP=Local", from: FromExternal, src: "203.0.113.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT,
			endpoints: []string{"10.180.0.3:8080"}},
		{name: "pod to NodePort eTP=Local", src: "10.0.0.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT,
			endpoints: []string{"10.180.0.3:8080", "10.180.1.3:8080"}},
		{name: "node to own NodePort eTP=Local", from: FromNode, src: "192.168.0.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT,
			endpoints: []string{"10.180.0.3:8080", "10.180.1.3:8080"}, masq: true},
		// I4: localhost NodePorts (localhostNodePorts=true, IPv4).
		{name: "localhost NodePort", from: FromNode, src: "127.0.0.1", dst: "127.0.0.1:3001", verdict: VerdictDNAT,
			endpoints: []string{"10.180.0.3:8080", "10.180.1.3:8080"}, masq: true},
		// A8/A9: iptables mode lets unknown ports of a ClusterIP through.
		{name: "unknown port", src: "10.0.0.2", dst: "172.30.0.41:443", verdict: VerdictNone},
		{name: "unknown protocol", proto: "udp", src: "10.0.0.2", dst: "172.30.0.41:80", verdict: VerdictNone},
	})
}

func TestUpstreamReferencePathAndJSONShape(t *testing.T) {
	dump := readFile(t, "testdata/upstream-2.5.rules")
	r, err := TraceIPTables(dump, flowCase{src: "10.0.0.2", dst: "172.30.0.41:80"}.packet(t), fixtureEnv())
	if err != nil {
		t.Fatal(err)
	}
	if r.Service != "ns1/svc1:p80" {
		t.Errorf("service %q, want ns1/svc1:p80", r.Service)
	}
	for _, e := range r.Endpoints {
		if math.Abs(e.Probability-0.5) > 1e-6 {
			t.Errorf("endpoint %s probability %v, want 0.5", e.Address, e.Probability)
		}
		dnat := false
		for _, s := range e.Path {
			dnat = dnat || (strings.HasPrefix(s.Chain, "KUBE-SEP-") && strings.HasSuffix(s.Rule, "-j DNAT --to-destination "+e.Address))
		}
		if !dnat {
			t.Errorf("endpoint %s: path %v has no DNAT rule of a KUBE-SEP chain to it", e.Address, e.Path)
		}
	}
	// The shared path: nat PREROUTING's jump, then the ClusterIP rule of KUBE-SERVICES.
	if len(r.Path) < 2 || r.Path[0].Chain != "PREROUTING" || r.Path[1].Chain != "KUBE-SERVICES" ||
		r.Path[1].Rule != `-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O` {
		t.Errorf("path starts %+v", r.Path)
	}
}
