package iptables

import (
	"net/netip"
	"sort"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/model"
)

func spn(ns, name, port string) model.ServicePortName {
	return model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}, Port: port, Protocol: v1.ProtocolTCP}
}

func ep(ip string, port int32, node string) *model.Endpoint {
	return &model.Endpoint{IP: netip.MustParseAddr(ip), Port: port, NodeName: node, IsLocal: node == "test-node", Ready: true, Serving: true}
}

func snapshotOf(ports map[*model.ServicePort][]*model.Endpoint) *model.Snapshot {
	s := &model.Snapshot{
		Services:       map[model.ServicePortName]*model.ServicePort{},
		Endpoints:      map[model.ServicePortName][]*model.Endpoint{},
		PortsByService: map[types.NamespacedName][]*model.ServicePort{},
		Changed:        map[types.NamespacedName]struct{}{},
		Node:           &model.Node{Name: "test-node", Addresses: []netip.Addr{netip.MustParseAddr("192.168.0.2")}},
	}
	for sp, eps := range ports {
		s.Services[sp.Name] = sp
		s.Endpoints[sp.Name] = model.MergeEndpoints(eps)
		s.PortsByService[sp.Name.NamespacedName] = append(s.PortsByService[sp.Name.NamespacedName], sp)
		s.Changed[sp.Name.NamespacedName] = struct{}{}
	}
	return s
}

func referenceParams() Params {
	return Params{
		Family: model.IPv4, MasqueradeBit: 14, NodePortAll: true, LocalhostNodePorts: true, DropInvalid: true, NFAcct: true,
		LocalDetector: DetectByCIDR(netip.MustParsePrefix("10.0.0.0/8")),
	}
}

// upstreamReference is upstream kube-proxy's output for this fixture (reference 2.5),
// nfacct counting included (the fixture's node has nfacct, as upstream's has). Upstream
// creates the same KUBE-PROXY-CANARY chains in mangle, filter and nat with separate
// commands; kproxy declares them in the restore input, so they are listed here.
const upstreamReference = `*mangle
:KUBE-PROXY-CANARY - [0:0]
COMMIT
*filter
:KUBE-PROXY-CANARY - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-FIREWALL - [0:0]
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-PROXY-CANARY - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-SEP-LXVODXWDISEETFEF - [0:0]
:KUBE-EXT-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SVL-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SEP-PQDFQR6RPJCQPJPH - [0:0]
:KUBE-SEP-KSOGSD6JUQMLHU3O - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SXIVWICOYRO3J4NJ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -j KUBE-SEP-LXVODXWDISEETFEF
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3001 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "pod traffic for ns2/svc2:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "route LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -j KUBE-SVL-GNZBNJ2PO5MGZ6GT
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.0.3:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-PQDFQR6RPJCQPJPH
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.1.3:8080" -j KUBE-SEP-KSOGSD6JUQMLHU3O
-A KUBE-SVL-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.0.3:8080" -j KUBE-SEP-PQDFQR6RPJCQPJPH
-A KUBE-SEP-PQDFQR6RPJCQPJPH -m comment --comment ns2/svc2:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-PQDFQR6RPJCQPJPH -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:8080
-A KUBE-SEP-KSOGSD6JUQMLHU3O -m comment --comment ns2/svc2:p80 -s 10.180.1.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-KSOGSD6JUQMLHU3O -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.1.3:8080
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
`

// byChain groups a restore input into table/chain -> rules in order, and the set of
// declared chains: the kernel's result does not depend on how chains interleave.
func byChain(t *testing.T, data string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	table := ""
	for _, line := range strings.Split(strings.TrimSpace(data), "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":"):
			name := strings.Fields(line[1:])[0]
			out[table+" declared"] = append(out[table+" declared"], name)
		case strings.HasPrefix(line, "-A "):
			chain := strings.Fields(line)[1]
			out[table+"/"+chain] = append(out[table+"/"+chain], line)
		case line == "COMMIT":
		default:
			out[table+" other"] = append(out[table+" other"], line)
		}
	}
	for k := range out {
		if strings.HasSuffix(k, " declared") {
			sort.Strings(out[k])
		}
	}
	return out
}

func TestBuildMatchesUpstreamReference(t *testing.T) {
	svc1 := &model.ServicePort{Name: spn("ns1", "svc1", "p80"), ClusterIPs: []netip.Addr{netip.MustParseAddr("172.30.0.41")}, Port: 80, Protocol: v1.ProtocolTCP}
	svc2 := &model.ServicePort{Name: spn("ns2", "svc2", "p80"), ClusterIPs: []netip.Addr{netip.MustParseAddr("172.30.0.42")}, Port: 80, Protocol: v1.ProtocolTCP,
		NodePort: 3001, ExternalPolicyLocal: true}
	snap := snapshotOf(map[*model.ServicePort][]*model.Endpoint{
		svc1: {ep("10.180.0.1", 80, "node2"), ep("10.180.0.2", 80, "node2")},
		svc2: {ep("10.180.0.3", 8080, "test-node"), ep("10.180.1.3", 8080, "node2")},
	})
	rs := Build(BuildInput{Params: referenceParams(), Snapshot: snap, Full: true})
	got, want := byChain(t, string(rs.Data())), byChain(t, upstreamReference)
	for k, w := range want {
		if strings.Join(got[k], "\n") != strings.Join(w, "\n") {
			t.Errorf("%s:\n got:\n%s\nwant:\n%s", k, strings.Join(got[k], "\n"), strings.Join(w, "\n"))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s: %v", k, got[k])
		}
	}
}
