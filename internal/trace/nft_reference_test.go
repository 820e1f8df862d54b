package trace

import (
	"strings"
	"testing"
)

// nftReferenceCases are reference 3.3's "Tracer results", and the rows of 4.2's groups
// that the fixture's Services (testdata/nft-reference.nft) set up.
var nftReferenceCases = []flowCase{
	// 3.3's tracer results.
	{name: "unused port of a ClusterIP", src: "10.0.0.2", dst: "172.30.0.41:81", verdict: VerdictReject},
	{name: "unallocated ClusterIP", src: "10.0.0.2", dst: "172.30.0.99:80", verdict: VerdictDrop},
	{name: "external to NodePort eTP=Local", from: FromExternal, src: "203.0.113.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT,
		endpoints: []string{"10.180.0.3:8080"}},
	{name: "node to own NodePort eTP=Local", from: FromNode, src: "192.168.0.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT,
		endpoints: []string{"10.180.0.3:8080", "10.180.1.3:8080"}, masq: true},
	// Group A (A3, A8) and the masquerade of ClusterIP traffic from outside the cluster.
	{name: "pod to ClusterIP", src: "10.0.0.2", dst: "172.30.0.41:80", verdict: VerdictDNAT,
		endpoints: []string{"10.180.0.1:80", "10.180.0.2:80"}},
	{name: "A8 nft: wrong protocol", proto: "udp", src: "10.0.0.2", dst: "172.30.0.42:80", verdict: VerdictReject},
	{name: "external to ClusterIP", from: FromExternal, src: "203.0.113.2", dst: "172.30.0.41:80", verdict: VerdictDNAT,
		endpoints: []string{"10.180.0.1:80", "10.180.0.2:80"}, masq: true},
	{name: "node to ClusterIP", from: FromNode, src: "192.168.0.2", dst: "172.30.0.41:80", verdict: VerdictDNAT,
		endpoints: []string{"10.180.0.1:80", "10.180.0.2:80"}, masq: true},
	// Group D: pod traffic to a NodePort of an eTP=Local Service short-circuits.
	{name: "pod to NodePort eTP=Local", src: "10.0.0.2", dst: "192.168.0.2:3001", verdict: VerdictDNAT,
		endpoints: []string{"10.180.0.3:8080", "10.180.1.3:8080"}},
	// I5': nft NodePorts answer only on nodeport-ips.
	{name: "I5' NodePort on a secondary IP", from: FromExternal, src: "203.0.113.2", dst: "192.168.1.2:3001", verdict: VerdictNone},
	// Session affinity.
	{name: "affinity Service", src: "10.0.0.2", dst: "172.30.0.43:80", verdict: VerdictDNAT,
		endpoints: []string{"10.180.0.4:80", "10.180.0.5:80"}},
	// Group B: no endpoints.
	{name: "B1 no endpoints", src: "10.0.0.2", dst: "172.30.0.44:80", verdict: VerdictReject},
	{name: "B4 no endpoints NodePort", from: FromExternal, src: "203.0.113.2", dst: "192.168.0.2:3004", verdict: VerdictReject},
	{name: "B node to no endpoints", from: FromNode, src: "192.168.0.2", dst: "172.30.0.44:80", verdict: VerdictReject},
	// Group C: loadBalancerSourceRanges.
	{name: "C4", from: FromExternal, src: "203.0.113.2", dst: "1.2.3.4:80", verdict: VerdictDNAT, endpoints: []string{"10.180.0.9:80"}, masq: true},
	{name: "C5", from: FromExternal, src: "203.0.113.130", dst: "1.2.3.4:80", verdict: VerdictDrop},
	{name: "C6", src: "10.0.0.2", dst: "1.2.3.4:80", verdict: VerdictDrop},
	{name: "C1", src: "10.0.0.2", dst: "172.30.0.45:80", verdict: VerdictDNAT, endpoints: []string{"10.180.0.9:80"}},
}

func TestNFTReferenceRuleset(t *testing.T) {
	dump := readFile(t, "testdata/nft-reference.json")
	for _, c := range nftReferenceCases {
		r, err := TraceNFTables(dump, c.packet(t), fixtureEnv())
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		c.check(t, r)
	}
}

func TestNFTAffinityAndService(t *testing.T) {
	dump := readFile(t, "testdata/nft-reference.json")
	r, err := TraceNFTables(dump, flowCase{src: "10.0.0.2", dst: "172.30.0.43:80"}.packet(t), fixtureEnv())
	if err != nil {
		t.Fatal(err)
	}
	if r.Affinity == nil || r.Affinity.TimeoutSeconds != 10800 {
		t.Errorf("affinity %+v, want a 10800s timeout\n%s", r.Affinity, text(r))
	}
	if r.Service != "ns3/svc3:p80" {
		t.Errorf("service %q, want ns3/svc3:p80", r.Service)
	}
	for _, e := range r.Endpoints {
		if e.Probability != 0.5 {
			t.Errorf("endpoint %s: probability %v, want 0.5", e.Address, e.Probability)
		}
	}
	r, err = TraceNFTables(dump, flowCase{src: "10.0.0.2", dst: "172.30.0.44:80"}.packet(t), fixtureEnv())
	if err != nil {
		t.Fatal(err)
	}
	if r.Service != "ns4/svc4:p80" {
		t.Errorf("no-endpoint Service %q, want ns4/svc4:p80 (from the element comment)\n%s", r.Service, text(r))
	}
}

// Hairpin: an endpoint reaching its own Service is masqueraded only when it lands on
// itself (the hairpin-connections set).
func TestNFTHairpin(t *testing.T) {
	dump := readFile(t, "testdata/nft-reference.json")
	r, err := TraceNFTables(dump, flowCase{src: "10.180.0.3", dst: "172.30.0.42:80"}.packet(t), fixtureEnv())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, e := range r.Endpoints {
		got[e.Address] = e.Masqueraded
	}
	if len(got) != 2 || !got["10.180.0.3:8080"] || got["10.180.1.3:8080"] {
		t.Errorf("endpoints and masquerade %v, want 10.180.0.3:8080 masqueraded and 10.180.1.3:8080 not\n%s", got, text(r))
	}
	if !strings.Contains(text(r), "@hairpin-connections masquerade fully-random") {
		t.Errorf("path lacks the hairpin rule:\n%s", text(r))
	}
}
