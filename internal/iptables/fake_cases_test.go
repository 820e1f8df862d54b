package iptables

import (
	"github.com/kproxy/kproxy/internal/model"
)

// fakeCase is a sequence of restores (or iptables runs) and the tables they leave.
// The expectations are what the kernel does (iptables 1.8.9, nft and legacy alike):
// fake_test.go holds Fake to them and fake_kernel_test.go the real binaries.
type fakeCase struct {
	name   string
	family model.Family // IPv4 unless set
	steps  []fakeStep
	// want maps a table to its iptables-save -t output (without "#" lines).
	want map[string]string
}

type fakeStep struct {
	restore string   // restore input, or
	run     []string // the arguments of one iptables run
	fails   bool
	// notFound says the run fails as "no such rule or chain" (exit status 1).
	notFound bool
}

const emptyFilter = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
const emptyNAT = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"

var fakeCases = []fakeCase{
	{
		name: "rules are saved in iptables-save's canonical form",
		steps: []fakeStep{{restore: `*filter
:KUBE-A - [0:0]
:KUBE-B - [0:0]
-A KUBE-A -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-B
-A KUBE-A -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j MARK --or-mark 0x4000
-A KUBE-A -j MARK --xor-mark 0x4000
-A KUBE-A -j MARK --set-mark 0x1
-A KUBE-A -j MARK --and-mark 0xffffbfff
-A KUBE-A -m statistic --mode random --probability 0.5000000000 -j KUBE-B
-A KUBE-A -m statistic --mode random --probability 0.3333333333 -j KUBE-B
-A KUBE-A -m recent --name KUBE-SEP-X --rcheck --seconds 10800 --reap -j KUBE-B
-A KUBE-A -m recent --name KUBE-SEP-X --set -j KUBE-B
-A KUBE-A -d 0.0.0.4/0.0.0.4 -g KUBE-B
-A KUBE-A -d 10.0.0.0/255.255.0.0 -p udp -m udp --dport 53 -j ACCEPT
-A KUBE-A -p tcp -o eth1 -i eth0 -d 1.2.3.4 -s 5.6.7.8 -m tcp --dport 80 -j ACCEPT
-A KUBE-A -p tcp --dport 81 -m comment --comment hi -j ACCEPT
-A KUBE-A -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-B
-A KUBE-A -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-A -j REJECT
-A KUBE-B -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-B -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A KUBE-B -i veth+ -j ACCEPT
-A KUBE-B ! -s 10.0.0.0/8 ! -p udp -j ACCEPT
-A KUBE-B -m comment --comment "a \"quoted\" one" -j ACCEPT
-A KUBE-B -p sctp -m sctp --dport 80 -j ACCEPT
-I KUBE-A -m comment --comment x_y -j ACCEPT
COMMIT
*nat
:KUBE-N - [0:0]
:KUBE-P - [0:0]
-A KUBE-N -m comment --comment ns1/svc1:p80 -m udp -p udp -j DNAT --to-destination 10.180.0.1:53
-A KUBE-N -m tcp -p tcp -d 127.0.0.0/8 --dport 3001 -j ACCEPT
-A KUBE-P -j MASQUERADE --random-fully
-A KUBE-P -j SNAT --to-source 1.2.3.4
-A OUTPUT -j KUBE-N
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-P
COMMIT
`}},
		want: map[string]string{
			"filter": `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-A - [0:0]
:KUBE-B - [0:0]
-A KUBE-A -m comment --comment x_y -j ACCEPT
-A KUBE-A -d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-B
-A KUBE-A -s 10.180.0.1/32 -m comment --comment "ns1/svc1:p80" -j MARK --set-xmark 0x4000/0x4000
-A KUBE-A -j MARK --set-xmark 0x4000/0x0
-A KUBE-A -j MARK --set-xmark 0x1/0xffffffff
-A KUBE-A -j MARK --set-xmark 0x0/0x4000
-A KUBE-A -m statistic --mode random --probability 0.50000000000 -j KUBE-B
-A KUBE-A -m statistic --mode random --probability 0.33333333349 -j KUBE-B
-A KUBE-A -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-X --mask 255.255.255.255 --rsource -j KUBE-B
-A KUBE-A -m recent --set --name KUBE-SEP-X --mask 255.255.255.255 --rsource -j KUBE-B
-A KUBE-A -d 0.0.0.4/0.0.0.4 -g KUBE-B
-A KUBE-A -d 10.0.0.0/16 -p udp -m udp --dport 53 -j ACCEPT
-A KUBE-A -s 5.6.7.8/32 -d 1.2.3.4/32 -i eth0 -o eth1 -p tcp -m tcp --dport 80 -j ACCEPT
-A KUBE-A -p tcp -m tcp --dport 81 -m comment --comment hi -j ACCEPT
-A KUBE-A ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j KUBE-B
-A KUBE-A -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-A -j REJECT --reject-with icmp-port-unreachable
-A KUBE-B -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-B -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-B -i veth+ -j ACCEPT
-A KUBE-B ! -s 10.0.0.0/8 ! -p udp -j ACCEPT
-A KUBE-B -m comment --comment "a \"quoted\" one" -j ACCEPT
-A KUBE-B -p sctp -m sctp --dport 80 -j ACCEPT
COMMIT
`,
			"nat": `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-N - [0:0]
:KUBE-P - [0:0]
-A OUTPUT -j KUBE-N
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-P
-A KUBE-N -p udp -m comment --comment "ns1/svc1:p80" -m udp -j DNAT --to-destination 10.180.0.1:53
-A KUBE-N -d 127.0.0.0/8 -p tcp -m tcp --dport 3001 -j ACCEPT
-A KUBE-P -j MASQUERADE --random-fully
-A KUBE-P -j SNAT --to-source 1.2.3.4
COMMIT
`,
		},
	},
	{
		name:   "IPv6 rules are saved in ip6tables-save's canonical form",
		family: model.IPv6,
		steps: []fakeStep{{restore: `*nat
:KUBE-N - [0:0]
-A KUBE-N -m comment --comment ns1/svc1:p80 -m udp -p udp -d fd00::1 -j DNAT --to-destination [fd00:10::1]:53
-A KUBE-N -m tcp -p tcp ! -d ::1/128 -s fd00::/64 --dport 3001 -j ACCEPT
-A KUBE-N -d 0:0:0:0:0:0:0:4/0:0:0:0:0:0:0:4 -j RETURN
-A KUBE-N -m addrtype --dst-type LOCAL ! -d ::1/128 -j RETURN
-A KUBE-N -m recent --name X --set -j RETURN
-A OUTPUT -j KUBE-N
COMMIT
*filter
:KUBE-F - [0:0]
-A KUBE-F -j REJECT
COMMIT
`}},
		want: map[string]string{
			"nat": `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-N - [0:0]
-A OUTPUT -j KUBE-N
-A KUBE-N -d fd00::1/128 -p udp -m comment --comment "ns1/svc1:p80" -m udp -j DNAT --to-destination [fd00:10::1]:53
-A KUBE-N -s fd00::/64 ! -d ::1/128 -p tcp -m tcp --dport 3001 -j ACCEPT
-A KUBE-N -d ::4/::4 -j RETURN
-A KUBE-N ! -d ::1/128 -m addrtype --dst-type LOCAL -j RETURN
-A KUBE-N -m recent --set --name X --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource -j RETURN
COMMIT
`,
			"filter": `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-F - [0:0]
-A KUBE-F -j REJECT --reject-with icmp6-port-unreachable
COMMIT
`,
		},
	},
	{
		name: "declaring a user chain flushes it; declaring a built-in chain sets its policy only",
		steps: []fakeStep{
			{restore: "*filter\n:KUBE-A - [0:0]\n-A KUBE-A -j ACCEPT\n-A INPUT -j ACCEPT\nCOMMIT\n"},
			{restore: "*filter\n:KUBE-A - [0:0]\n:INPUT DROP [0:0]\n-A KUBE-A -j DROP\n-A INPUT -j DROP\nCOMMIT\n"},
		},
		want: map[string]string{"filter": "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-A - [0:0]\n" +
			"-A INPUT -j ACCEPT\n-A INPUT -j DROP\n-A KUBE-A -j DROP\nCOMMIT\n"},
	},
	{
		name: "user chains are saved in name order whatever the order they were made in",
		steps: []fakeStep{
			{restore: "*filter\n:Z - [0:0]\n-A Z -j ACCEPT\nCOMMIT\n"},
			{restore: "*filter\n:A - [0:0]\n-A A -j ACCEPT\nCOMMIT\n"},
		},
		want: map[string]string{"filter": "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\n:Z - [0:0]\n" +
			"-A A -j ACCEPT\n-A Z -j ACCEPT\nCOMMIT\n"},
	},
	{
		name: "a chain that holds rules cannot be deleted",
		steps: []fakeStep{
			{restore: "*filter\n:A - [0:0]\n-A A -j ACCEPT\nCOMMIT\n"},
			{restore: "*filter\n-X A\nCOMMIT\n", fails: true},
		},
		want: map[string]string{"filter": "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\n-A A -j ACCEPT\nCOMMIT\n"},
	},
	{
		name: "a referenced chain cannot be deleted, not even when its referrer is flushed later in the input",
		steps: []fakeStep{
			{restore: "*filter\n:A - [0:0]\n:B - [0:0]\n-A B -j A\nCOMMIT\n"},
			{restore: "*filter\n-X A\nCOMMIT\n", fails: true},
			{restore: "*filter\n:A - [0:0]\n-X A\n:B - [0:0]\nCOMMIT\n", fails: true},
		},
		want: map[string]string{"filter": "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n-A B -j A\nCOMMIT\n"},
	},
	{
		name: "flushing a chain and its referrer by declaring them lets it be deleted",
		steps: []fakeStep{
			{restore: "*filter\n:A - [0:0]\n:B - [0:0]\n-A A -j ACCEPT\n-A B -j A\nCOMMIT\n"},
			{restore: "*filter\n:A - [0:0]\n:B - [0:0]\n-X A\nCOMMIT\n"},
		},
		want: map[string]string{"filter": "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:B - [0:0]\nCOMMIT\n"},
	},
	{
		name: "-X without a chain deletes every user chain",
		steps: []fakeStep{
			{restore: "*filter\n:A - [0:0]\n:B - [0:0]\nCOMMIT\n"},
			{restore: "*filter\n-X\nCOMMIT\n"},
		},
		want: map[string]string{"filter": emptyFilter},
	},
	{
		name: "missing chains: rules in them, jumps to them, deleting them, jumps to chains declared later",
		steps: []fakeStep{
			{restore: "*filter\n-A NOPE -j ACCEPT\nCOMMIT\n", fails: true},
			{restore: "*filter\n:A - [0:0]\n-A A -j NOPE\nCOMMIT\n", fails: true},
			{restore: "*filter\n-X NOPE\nCOMMIT\n", fails: true},
			{restore: "*filter\n:A - [0:0]\n-A A -j B\n:B - [0:0]\nCOMMIT\n", fails: true},
		},
		want: map[string]string{"filter": emptyFilter},
	},
	{
		name: "a rule cannot jump to a built-in chain; a chain cannot be made twice",
		steps: []fakeStep{
			{restore: "*filter\n:A - [0:0]\n-A A -j INPUT\nCOMMIT\n", fails: true},
			{restore: "*filter\n:A - [0:0]\n-N A\nCOMMIT\n", fails: true},
		},
		want: map[string]string{"filter": emptyFilter},
	},
	{
		name: "-I at a position, -D of a rule written in another order, -D of a missing rule",
		steps: []fakeStep{
			{restore: `*filter
:A - [0:0]
-A A -m comment --comment "hello world" -p tcp -d 10.0.0.1 -j ACCEPT
-A A -j DROP
-I A 2 -j RETURN
COMMIT
`},
			{restore: "*filter\n-D A -d 10.0.0.1/32 -p tcp -m comment --comment \"hello world\" -j ACCEPT\nCOMMIT\n"},
			{restore: "*filter\n-D A -j ACCEPT\nCOMMIT\n", fails: true},
		},
		want: map[string]string{"filter": "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\n-A A -j RETURN\n-A A -j DROP\nCOMMIT\n"},
	},
	{
		name: "each table is its own transaction: a table that fails leaves the ones committed before",
		steps: []fakeStep{
			{restore: "*filter\n:A - [0:0]\nCOMMIT\n*nat\n:B - [0:0]\n-A NOPE -j ACCEPT\nCOMMIT\n", fails: true},
		},
		want: map[string]string{
			"filter": "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\nCOMMIT\n",
			"nat":    emptyNAT,
		},
	},
	{
		name: "input without COMMIT changes nothing",
		steps: []fakeStep{
			{restore: "*filter\n:A - [0:0]\n", fails: true},
		},
		want: map[string]string{"filter": emptyFilter},
	},
	{
		name: "NAT targets only run from their hooks, wherever the jump comes from",
		steps: []fakeStep{
			{restore: "*nat\n:A - [0:0]\n-A A -p tcp -j DNAT --to-destination 1.2.3.4:80\n-A POSTROUTING -j A\nCOMMIT\n", fails: true},
			{restore: "*nat\n:M - [0:0]\n-A M -j MASQUERADE\n-A PREROUTING -j M\nCOMMIT\n", fails: true},
			{restore: "*nat\n:M - [0:0]\n-A M -j MASQUERADE\n-A INPUT -j M\nCOMMIT\n", fails: true},
			{restore: "*nat\n:A - [0:0]\n:B - [0:0]\n-A A -p tcp -j DNAT --to-destination 1.2.3.4:80\n-A B -j A\n-A OUTPUT -j B\nCOMMIT\n"},
			{restore: "*nat\n-A POSTROUTING -j B\nCOMMIT\n", fails: true},
		},
		want: map[string]string{"nat": "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n" +
			"-A OUTPUT -j B\n-A A -p tcp -j DNAT --to-destination 1.2.3.4:80\n-A B -j A\nCOMMIT\n"},
	},
	{
		name: "REJECT belongs to the filter table; DNAT to a port needs a protocol",
		steps: []fakeStep{
			{restore: "*nat\n:A - [0:0]\n-A A -j REJECT\nCOMMIT\n", fails: true},
			{restore: "*nat\n:A - [0:0]\n-A A -j DNAT --to-destination 1.2.3.4:80\nCOMMIT\n", fails: true},
			{restore: "*filter\n:A - [0:0]\n-A A -j REJECT\n-A OUTPUT -j A\n-A FORWARD -j A\nCOMMIT\n"},
		},
		want: map[string]string{
			"nat": emptyNAT,
			"filter": "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\n" +
				"-A FORWARD -j A\n-A OUTPUT -j A\n-A A -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n",
		},
	},
	{
		name: "an address of the other family is refused",
		steps: []fakeStep{
			{restore: "*filter\n:A - [0:0]\n-A A -s fd00::1 -j ACCEPT\nCOMMIT\n", fails: true},
		},
		want: map[string]string{"filter": emptyFilter},
	},
	{
		name: "-F flushes one chain or all, -P sets a policy",
		steps: []fakeStep{
			{restore: "*filter\n:A - [0:0]\n:B - [0:0]\n-A A -j ACCEPT\n-A B -j ACCEPT\n-A INPUT -j ACCEPT\nCOMMIT\n"},
			{restore: "*filter\n-F A\n-P FORWARD DROP\nCOMMIT\n"},
			{restore: "*filter\n-A A -j DROP\nCOMMIT\n"},
			{restore: "*filter\n-F\nCOMMIT\n"},
		},
		want: map[string]string{"filter": "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\nCOMMIT\n"},
	},
	{
		name: "iptables runs: -C and -D of missing rules and -S of a missing chain are not found",
		steps: []fakeStep{
			{restore: "*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n"},
			{run: []string{"-t", "nat", "-C", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"}, fails: true, notFound: true},
			{run: []string{"-t", "nat", "-I", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"}},
			{run: []string{"-t", "nat", "-I", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"}},
			{run: []string{"-t", "nat", "-C", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"}},
			{run: []string{"-t", "nat", "-D", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"}},
			{run: []string{"-t", "nat", "-S", "KUBE-SERVICES"}},
			{run: []string{"-t", "nat", "-S", "KUBE-NOPE"}, fails: true, notFound: true},
			{run: []string{"-t", "nat", "-D", "PREROUTING", "-j", "KUBE-SERVICES"}, fails: true, notFound: true},
			{run: []string{"-t", "nat", "-X", "KUBE-SERVICES"}, fails: true},
		},
		want: map[string]string{"nat": "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n" +
			"-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\nCOMMIT\n"},
	},
}
