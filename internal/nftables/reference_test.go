package nftables

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/internal/model"
)

// referenceWorld is the fixture of the reference's nftables example (3.3): svc1 with two
// remote endpoints, svc2 a NodePort with externalTrafficPolicy Local and one local
// endpoint, svc3 with ClientIP affinity.
func referenceWorld() *world {
	w := newWorld()
	w.set(&model.ServicePort{Name: spn("ns1", "svc1", "p80"), ClusterIPs: addrs("172.30.0.41"), Port: 80, Protocol: v1.ProtocolTCP},
		ep("10.180.0.1", 80, "node2"), ep("10.180.0.2", 80, "node2"))
	w.set(&model.ServicePort{Name: spn("ns2", "svc2", "p80"), ClusterIPs: addrs("172.30.0.42"), Port: 80, Protocol: v1.ProtocolTCP,
		NodePort: 3001, ExternalPolicyLocal: true},
		ep("10.180.0.3", 8080, "test-node"), ep("10.180.1.3", 8080, "node2"))
	w.set(&model.ServicePort{Name: spn("ns3", "svc3", "p80"), ClusterIPs: addrs("172.30.0.43"), Port: 80, Protocol: v1.ProtocolTCP,
		StickyMaxAgeSeconds: 10800},
		ep("10.180.0.4", 80, "node2"), ep("10.180.0.5", 80, "node2"))
	return w
}

// upstreamReference is upstream kube-proxy's transaction for that fixture, from the
// reference, with our table comment, one "add chain" per line, and the second affinity
// endpoint's chain (elided there) written out.
const upstreamReference = `
add table ip kube-proxy { comment "rules for kproxy" ; }
add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }
add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }
add chain ip kube-proxy filter-output { type filter hook output priority 0 ; }
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip kube-proxy cluster-ips-check
add chain ip kube-proxy firewall-check
add chain ip kube-proxy masquerading
add chain ip kube-proxy nodeport-endpoints-check
add chain ip kube-proxy service-endpoints-check
add chain ip kube-proxy services
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }
add set ip kube-proxy hairpin-connections { type ipv4_addr . ipv4_addr . inet_proto . inet_service ; comment "service hairpin connections" ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }
add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
add rule ip kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-output-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump cluster-ips-check
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip kube-proxy masquerading mark and 0x4000 != 0 mark set mark xor 0x4000 masquerade fully-random
add rule ip kube-proxy masquerading ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin-connections masquerade fully-random
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
add rule ip kube-proxy services ip daddr @cluster-ips ip saddr != 10.0.0.0/8 mark set mark or 0x4000 comment "masquerade clusterIP traffic from outside cluster"
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.180.0.1 . 80 , 1 : 10.180.0.2 . 80 }
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add chain ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.180.0.3 . 8080 , 1 : 10.180.1.3 . 8080 }
add chain ip kube-proxy local-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy local-42NFTM6N-ns2/svc2/tcp/p80 meta l4proto tcp dnat to 10.180.0.3:8080
add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local mark set mark or 0x4000 comment "masquerade local traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 goto local-42NFTM6N-ns2/svc2/tcp/p80
add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy hairpin-connections { 10.180.0.3 . 10.180.0.3 . tcp . 8080 }
add set ip kube-proxy affinity-A6C6ULNT-ns3/svc3/tcp/p80__10.180.0.4/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add set ip kube-proxy affinity-VMM5FPNP-ns3/svc3/tcp/p80__10.180.0.5/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip saddr @affinity-A6C6ULNT-ns3/svc3/tcp/p80__10.180.0.4/80 goto endpoint-A6C6ULNT-ns3/svc3/tcp/p80__10.180.0.4/80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip saddr @affinity-VMM5FPNP-ns3/svc3/tcp/p80__10.180.0.5/80 goto endpoint-VMM5FPNP-ns3/svc3/tcp/p80__10.180.0.5/80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-A6C6ULNT-ns3/svc3/tcp/p80__10.180.0.4/80 , 1 : goto endpoint-VMM5FPNP-ns3/svc3/tcp/p80__10.180.0.5/80 }
add chain ip kube-proxy endpoint-A6C6ULNT-ns3/svc3/tcp/p80__10.180.0.4/80
add rule ip kube-proxy endpoint-A6C6ULNT-ns3/svc3/tcp/p80__10.180.0.4/80 update @affinity-A6C6ULNT-ns3/svc3/tcp/p80__10.180.0.4/80 { ip saddr }
add rule ip kube-proxy endpoint-A6C6ULNT-ns3/svc3/tcp/p80__10.180.0.4/80 meta l4proto tcp dnat to 10.180.0.4:80
add chain ip kube-proxy endpoint-VMM5FPNP-ns3/svc3/tcp/p80__10.180.0.5/80
add rule ip kube-proxy endpoint-VMM5FPNP-ns3/svc3/tcp/p80__10.180.0.5/80 update @affinity-VMM5FPNP-ns3/svc3/tcp/p80__10.180.0.5/80 { ip saddr }
add rule ip kube-proxy endpoint-VMM5FPNP-ns3/svc3/tcp/p80__10.180.0.5/80 meta l4proto tcp dnat to 10.180.0.5:80
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy nodeport-ips { 192.168.0.2 }
`

// kproxyDeviations replaces the reference's lines where kproxy differs on purpose: a
// dispatch chain without affinity DNATs through its own named endpoint map, so that an
// endpoint change is element updates and never a chain rewrite (issue 7).
func kproxyDeviations(lines []string) []string {
	svc1 := "service-ULMVA6XW-ns1/svc1/tcp/p80"
	svc2 := "service-42NFTM6N-ns2/svc2/tcp/p80"
	loc2 := "local-42NFTM6N-ns2/svc2/tcp/p80"
	mapDecl := func(name string) string {
		return "add map ip kube-proxy " + name + " { typeof numgen random mod 65536 : ip daddr . th dport ; flags interval ; }"
	}
	replace := map[string][]string{
		"add rule ip kube-proxy " + svc1 + " meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.180.0.1 . 80 , 1 : 10.180.0.2 . 80 }": append(
			[]string{mapDecl(svc1)}, dispatch("ip", svc1, "10.180.0.1 . 80", "10.180.0.2 . 80")...),
		"add rule ip kube-proxy " + svc2 + " meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.180.0.3 . 8080 , 1 : 10.180.1.3 . 8080 }": append(
			[]string{mapDecl(svc2)}, dispatch("ip", svc2, "10.180.0.3 . 8080", "10.180.1.3 . 8080")...),
		"add rule ip kube-proxy " + loc2 + " meta l4proto tcp dnat to 10.180.0.3:8080": append(
			[]string{mapDecl(loc2)}, dispatch("ip", loc2, "10.180.0.3 . 8080")...),
	}
	var out []string
	for _, l := range lines {
		if r, ok := replace[l]; ok {
			out = append(out, r...)
			delete(replace, l)
			continue
		}
		out = append(out, l)
	}
	if len(replace) != 0 {
		panic(fmt.Sprintf("the reference no longer holds %d of the lines kproxy replaces", len(replace)))
	}
	return out
}

// rulesByChain groups "add rule" lines by chain, keeping their order (which matters),
// and sorts every other line (whose order does not).
func rulesByChain(lines []string) (map[string][]string, []string) {
	rules := map[string][]string{}
	var other []string
	for _, l := range lines {
		if strings.HasPrefix(l, "add rule ") {
			chain := strings.Fields(l)[4]
			rules[chain] = append(rules[chain], l)
		} else if l != "" {
			other = append(other, l)
		}
	}
	sort.Strings(other)
	return rules, other
}

func TestFullSyncMatchesUpstreamReference(t *testing.T) {
	tp := newTestProxier(referenceParams())
	tp.sync(t, referenceWorld().snapshot(), true)

	gotRules, gotOther := rulesByChain(strings.Split(tp.fake.Dump(), "\n"))
	wantRules, wantOther := rulesByChain(kproxyDeviations(strings.Split(upstreamReference, "\n")))
	if strings.Join(gotOther, "\n") != strings.Join(wantOther, "\n") {
		t.Errorf("objects and elements differ:\n got:\n%s\nwant:\n%s", strings.Join(gotOther, "\n"), strings.Join(wantOther, "\n"))
	}
	for chain, want := range wantRules {
		if got := gotRules[chain]; strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("chain %s:\n got:\n%s\nwant:\n%s", chain, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	for chain, got := range gotRules {
		if _, ok := wantRules[chain]; !ok {
			t.Errorf("unexpected rules in chain %s: %v", chain, got)
		}
	}
}
