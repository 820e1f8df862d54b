package proxytest

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/trace"
)

// Backends, as the packet table names them.
const (
	IPTables = "iptables"
	NFTables = "nftables"
	IPVS     = "ipvs"
)

// Outcome is where a packet goes: DNAT to one of Endpoints, REJECT, DROP, or NONE
// (no Service rule touches it).
type Outcome struct {
	Verdict   trace.Verdict
	Endpoints []string
	// Masq says traffic is masqueraded; checked where the tracer follows the mark to
	// POSTROUTING (iptables and nftables).
	Masq bool
}

// Packet is the first packet of a connection and where Kubernetes Service semantics
// send it. The expectations come from reference 4.2's packet-flow groups, never from
// running a backend.
type Packet struct {
	Name     string
	From     trace.Origin // "" is a pod
	Proto    string       // "" is tcp
	Src, Dst string       // Dst is "IP:port"
	Want     Outcome
	// Deviations are a backend's documented differences (reference 1.2 and 3.5,
	// docs/ipvs.md), each with the reason.
	Deviations map[string]Deviation
}

// Deviation is what one backend does instead, and why.
type Deviation struct {
	Outcome
	Why string
}

// Expect is the outcome for a backend.
func (p Packet) Expect(backend string) Outcome {
	if d, ok := p.Deviations[backend]; ok {
		return d.Outcome
	}
	return p.Want
}

// TracePacket is the packet for the tracer.
func (p Packet) TracePacket(t *testing.T) trace.Packet {
	t.Helper()
	dst, err := netip.ParseAddrPort(p.Dst)
	if err != nil {
		t.Fatalf("packet %q: destination %q: %v", p.Name, p.Dst, err)
	}
	src, err := netip.ParseAddr(p.Src)
	if err != nil {
		t.Fatalf("packet %q: source %q: %v", p.Name, p.Src, err)
	}
	tp := trace.Packet{Protocol: p.Proto, Source: src, Destination: dst.Addr(), Port: dst.Port(), From: p.From}
	if tp.Protocol == "" {
		tp.Protocol = "tcp"
	}
	if tp.From == "" {
		tp.From = trace.FromPod
	}
	return tp
}

// Check compares what a backend did with the packet to the table; details (the
// trace) go into the failure message. Masquerade is checked when checkMasq is set.
func (p Packet) Check(t *testing.T, backend string, verdict trace.Verdict, endpoints []string, masq, checkMasq bool, details string) {
	t.Helper()
	want := p.Expect(backend)
	got := slices.Clone(endpoints)
	slices.Sort(got)
	wantEps := slices.Clone(want.Endpoints)
	slices.Sort(wantEps)
	switch {
	case verdict != want.Verdict:
		t.Errorf("%s: %s: verdict %s, want %s\n%s", backend, p.Name, verdict, want.Verdict, details)
	case !slices.Equal(got, wantEps):
		t.Errorf("%s: %s: endpoints %v, want %v\n%s", backend, p.Name, got, wantEps, details)
	case checkMasq && verdict == trace.VerdictDNAT && masq != want.Masq:
		t.Errorf("%s: %s: masqueraded %v, want %v\n%s", backend, p.Name, masq, want.Masq, details)
	}
}

func dnat(masq bool, eps ...string) Outcome {
	return Outcome{Verdict: trace.VerdictDNAT, Endpoints: eps, Masq: masq}
}

var (
	reject = Outcome{Verdict: trace.VerdictReject}
	drop   = Outcome{Verdict: trace.VerdictDrop}
	none   = Outcome{Verdict: trace.VerdictNone}
)

// The documented deviations, shared by many rows.
var (
	// ipvsRefuses: a virtual server without real servers answers port-unreachable
	// where the other modes drop (docs/ipvs.md).
	ipvsRefuses = map[string]Deviation{IPVS: {reject, "IPVS cannot drop: the virtual server has no real server and refuses (docs/ipvs.md)"}}
	// unknownPort: a port a ClusterIP does not have (reference 1.2, A9).
	unknownPort = map[string]Deviation{
		NFTables: {reject, "nftables rejects unknown ports of active ClusterIPs (reference 3.5)"},
		IPVS:     {reject, "KUBE-IPVS-FILTER rejects new connections to kube-ipvs0 addresses on other ports (docs/ipvs.md)"},
	}
	// unallocated: an address of the service CIDR no Service has (reference A10).
	unallocated = map[string]Deviation{NFTables: {drop, "nftables drops traffic to unallocated ClusterIPs (reference 3.5)"}}
)

// ipvsLocalOnly: with externalTrafficPolicy Local the external addresses' virtual
// servers hold the local endpoints only, for every client (docs/ipvs.md).
func ipvsLocalOnly(o Outcome) map[string]Deviation {
	return map[string]Deviation{IPVS: {o, "IPVS has no short-circuit for pods and the node under eTP=Local (docs/ipvs.md)"}}
}

const (
	pod      = "10.0.0.2"
	outside  = "203.0.113.2"
	blocked  = "203.0.113.130" // outside every source range
	nodeSelf = NodeIP
)

func packetsA() []Packet {
	return []Packet{
		{Name: "pod to ClusterIP", Src: pod, Dst: "172.30.0.41:80", Want: dnat(false, "10.180.0.1:80", "10.180.2.1:80")},
		{Name: "pod to ClusterIP, UDP port", Proto: "udp", Src: pod, Dst: "172.30.0.41:53", Want: dnat(false, "10.180.0.1:53", "10.180.2.1:53")},
		{Name: "node to ClusterIP is masqueraded", From: trace.FromNode, Src: nodeSelf, Dst: "172.30.0.41:80", Want: dnat(true, "10.180.0.1:80", "10.180.2.1:80")},
		{Name: "unknown port of a ClusterIP", Src: pod, Dst: "172.30.0.41:443", Want: none, Deviations: unknownPort},
		{Name: "external to NodePort", From: trace.FromExternal, Src: outside, Dst: NodeIP + ":3001", Want: dnat(true, "10.180.0.2:80", "10.180.2.2:80")},
		{Name: "pod to NodePort", Src: pod, Dst: NodeIP + ":3001", Want: dnat(true, "10.180.0.2:80", "10.180.2.2:80")},
		{Name: "external in a source range to LB IP", From: trace.FromExternal, Src: outside, Dst: "1.2.3.4:80", Want: dnat(true, "10.180.0.3:80")},
		{Name: "external outside the source ranges to LB IP", From: trace.FromExternal, Src: blocked, Dst: "1.2.3.4:80", Want: drop},
		{Name: "pod outside the source ranges to LB IP", Src: pod, Dst: "1.2.3.4:80", Want: drop},
		{Name: "node in a source range to LB IP", From: trace.FromNode, Src: nodeSelf, Dst: "1.2.3.4:80", Want: dnat(true, "10.180.0.3:80")},
		{Name: "LB IP as source, admitted since a range holds the node", From: trace.FromExternal, Src: "1.2.3.4", Dst: "1.2.3.4:80", Want: dnat(true, "10.180.0.3:80")},
		{Name: "NodePort ignores source ranges", From: trace.FromExternal, Src: blocked, Dst: NodeIP + ":3003", Want: dnat(true, "10.180.0.3:80")},
		{Name: "pod to ClusterIP of an eTP=Local Service", Src: pod, Dst: "172.30.0.44:80", Want: dnat(false, "10.180.0.4:80", "10.180.2.4:80")},
		{Name: "external to externalIP, eTP=Local", From: trace.FromExternal, Src: outside, Dst: "192.168.99.11:80", Want: dnat(false, "10.180.2.4:80")},
		{Name: "pod to externalIP, eTP=Local, short-circuited", Src: pod, Dst: "192.168.99.11:80", Want: dnat(false, "10.180.0.4:80", "10.180.2.4:80"),
			Deviations: ipvsLocalOnly(dnat(false, "10.180.2.4:80"))},
		{Name: "external to LB IP, eTP=Local", From: trace.FromExternal, Src: outside, Dst: "5.6.7.8:80", Want: dnat(false, "10.180.2.4:80")},
		{Name: "external to NodePort, eTP=Local", From: trace.FromExternal, Src: outside, Dst: NodeIP + ":3004", Want: dnat(false, "10.180.2.4:80")},
		{Name: "node to NodePort, eTP=Local, short-circuited and masqueraded", From: trace.FromNode, Src: nodeSelf, Dst: NodeIP + ":3004",
			Want: dnat(true, "10.180.0.4:80", "10.180.2.4:80"), Deviations: ipvsLocalOnly(dnat(true, "10.180.2.4:80"))},
		{Name: "pod to iTP=Local ClusterIP", Src: pod, Dst: "172.30.0.45:80", Want: dnat(false, "10.180.0.5:80")},
		{Name: "external to iTP=Local ClusterIP", From: trace.FromExternal, Src: outside, Dst: "172.30.0.45:80", Want: dnat(true, "10.180.0.5:80")},
		{Name: "pod to ClusterIP with terminating endpoints uses the ready one", Src: pod, Dst: "172.30.0.46:80", Want: dnat(false, "10.180.6.5:80")},
		{Name: "external to eTP=Local LB IP falls back to local serving terminating endpoints", From: trace.FromExternal, Src: outside, Dst: "9.10.11.12:80",
			Want: dnat(false, "10.180.6.2:80", "10.180.6.3:80")},
		{Name: "session affinity: a new client may reach every endpoint", Src: pod, Dst: "172.30.0.47:80", Want: dnat(false, "10.180.0.7:80", "10.180.1.7:80")},
		{Name: "no endpoints: ClusterIP", Src: pod, Dst: "172.30.0.48:80", Want: reject},
		{Name: "no endpoints: NodePort", From: trace.FromExternal, Src: outside, Dst: NodeIP + ":3008", Want: reject},
		{Name: "no endpoints: LB IP", From: trace.FromExternal, Src: outside, Dst: "1.2.3.8:80", Want: reject},
		{Name: "no endpoints: externalIP", From: trace.FromExternal, Src: outside, Dst: "192.168.99.18:80", Want: reject},
		{Name: "eTP=Local without local endpoints: external to NodePort", From: trace.FromExternal, Src: outside, Dst: NodeIP + ":3009", Want: drop,
			Deviations: ipvsRefuses},
		{Name: "eTP=Local without local endpoints: pod to NodePort short-circuits", Src: pod, Dst: NodeIP + ":3009", Want: dnat(false, "10.180.1.9:80"),
			Deviations: ipvsLocalOnly(reject)},
		{Name: "unallocated address of the service CIDR", Src: pod, Dst: "172.30.0.99:80", Want: none, Deviations: unallocated},
	}
}

func packetsB() []Packet {
	return []Packet{
		{Name: "pod to ClusterIP after an endpoint was replaced", Src: pod, Dst: "172.30.0.41:80", Want: dnat(false, "10.180.0.1:80", "10.180.2.11:80")},
		{Name: "pod to the ClusterIP of a deleted Service", Src: pod, Dst: "172.30.0.42:80", Want: none, Deviations: unallocated},
		{Name: "external to the NodePort of a deleted Service", From: trace.FromExternal, Src: outside, Dst: NodeIP + ":3001", Want: none},
		{Name: "external in the remaining source range to LB IP", From: trace.FromExternal, Src: outside, Dst: "1.2.3.4:80", Want: dnat(true, "10.180.0.3:80", "10.180.2.3:80")},
		{Name: "node no longer in a source range to LB IP", From: trace.FromNode, Src: nodeSelf, Dst: "1.2.3.4:80", Want: drop,
			Deviations: map[string]Deviation{IPVS: {dnat(true, "10.180.0.3:80", "10.180.2.3:80"),
				"IPVS schedules the node's own connections in LOCAL_OUT, before the source-range firewall in filter INPUT (docs/ipvs.md)"}}},
		{Name: "LB IP as source no longer admitted", From: trace.FromExternal, Src: "1.2.3.4", Dst: "1.2.3.4:80", Want: drop},
		{Name: "external to externalIP, eTP=Local, local endpoint gone", From: trace.FromExternal, Src: outside, Dst: "192.168.99.11:80", Want: drop,
			Deviations: ipvsRefuses},
		{Name: "pod to externalIP, eTP=Local, local endpoint gone, short-circuited", Src: pod, Dst: "192.168.99.11:80", Want: dnat(false, "10.180.0.4:80"),
			Deviations: ipvsLocalOnly(reject)},
		{Name: "external to LB IP, eTP=Local, local endpoint gone", From: trace.FromExternal, Src: outside, Dst: "5.6.7.8:80", Want: drop, Deviations: ipvsRefuses},
		{Name: "pod to ClusterIP of the eTP=Local Service", Src: pod, Dst: "172.30.0.44:80", Want: dnat(false, "10.180.0.4:80")},
		{Name: "pod to iTP=Local ClusterIP without local endpoints", Src: pod, Dst: "172.30.0.45:80", Want: drop, Deviations: ipvsRefuses},
		{Name: "pod to ClusterIP whose endpoints no longer serve", Src: pod, Dst: "172.30.0.46:80", Want: reject},
		{Name: "external to LB IP whose endpoints no longer serve", From: trace.FromExternal, Src: outside, Dst: "9.10.11.12:80", Want: reject},
		{Name: "session affinity after an endpoint was added", Src: pod, Dst: "172.30.0.47:80", Want: dnat(false, "10.180.0.7:80", "10.180.1.7:80", "10.180.2.7:80")},
		{Name: "endpoints arrived: ClusterIP", Src: pod, Dst: "172.30.0.48:80", Want: dnat(false, "10.180.1.8:80")},
		{Name: "endpoints arrived: NodePort", From: trace.FromExternal, Src: outside, Dst: NodeIP + ":3008", Want: dnat(true, "10.180.1.8:80")},
		{Name: "endpoints arrived: LB IP", From: trace.FromExternal, Src: outside, Dst: "1.2.3.8:80", Want: dnat(true, "10.180.1.8:80")},
		{Name: "pod to the added Service", Src: pod, Dst: "172.30.0.50:80", Want: dnat(false, "10.180.0.10:80")},
		{Name: "eTP=Local without local endpoints, unchanged: external to NodePort", From: trace.FromExternal, Src: outside, Dst: NodeIP + ":3009", Want: drop,
			Deviations: ipvsRefuses},
	}
}

func packetsEmpty() []Packet {
	return []Packet{
		{Name: "pod to a former ClusterIP", Src: pod, Dst: "172.30.0.41:80", Want: none, Deviations: unallocated},
		{Name: "external to a former NodePort", From: trace.FromExternal, Src: outside, Dst: NodeIP + ":3001", Want: none},
	}
}

// Describe names the packet in failure messages.
func (p Packet) Describe() string {
	from := string(p.From)
	if from == "" {
		from = string(trace.FromPod)
	}
	proto := p.Proto
	if proto == "" {
		proto = "tcp"
	}
	return strings.Join([]string{from, proto, p.Src, "->", p.Dst}, " ")
}
