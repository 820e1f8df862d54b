// Package trace answers "where does this packet go?" for kproxy's rulesets (and
// upstream kube-proxy's, which have the same layout). It evaluates the first packet of
// a connection through the live ruleset, or through a saved dump, the way netfilter
// would, and reports the rules it matched, the Service, the endpoints it can reach
// with their probabilities, session affinity, masquerading, and the verdict.
//
// # Command line
//
//	kproxy trace --source IP --destination IP --port N [--protocol tcp|udp|sctp]
//	    [--from pod|node|external] [--source-port N] [--in-interface NAME]
//	    [--mode auto|iptables|nftables] [--from-file FILE] [--local-addresses A,B,...]
//	    [--output text|json]
//
// --from says where the packet enters: "pod" and "external" arrive through
// PREROUTING, "node" is sent by the node itself (OUTPUT, source-type LOCAL). The
// default is "pod". The exit status is 0 whatever the verdict, 1 when the ruleset
// cannot be read or parsed, 2 for bad flags.
//
// # How a packet is evaluated
//
// iptables mode reads iptables-save (ip6tables-save for IPv6 packets). A packet from a
// pod or outside runs nat PREROUTING, then filter INPUT when its (possibly DNATed)
// destination is local, else filter FORWARD and nat POSTROUTING. A packet from the
// node runs nat OUTPUT, filter OUTPUT, nat POSTROUTING, then filter INPUT when its
// destination is local. Built-in chain policies apply. When a table of the dump has
// no built-in chains (restore input), kube-proxy's standard jump rules are assumed.
//
// nftables mode reads "nft -j list table ip kube-proxy" (ip6 for IPv6) and runs the
// table's base chains of each hook in priority order, along the same paths (a looped
// back packet of the node runs only the filter chains of prerouting, then input).
// Other tables are not evaluated.
//
// The traced packet is NEW (conntrack state NEW, plus DNAT once it is DNATed).
// "-m statistic --mode random" and "numgen random mod N" split the trace into
// branches, so every reachable endpoint is reported with its probability. ClientIP
// affinity is reported with its timeout; iptables' -m recent lists cannot be read, so
// the client is assumed to have no entry yet, while nftables' affinity sets are
// looked up with their current elements. Addresses are local (addrtype LOCAL, fib
// type local) when they are loopback addresses or among the node's addresses: the
// interfaces' addresses of the current network namespace, or --local-addresses.
// -i / iifname matches need --in-interface; without it they do not match. Matches
// and statements the tracer does not know do not match (or are skipped), and the
// result says so in its notes.
//
// # JSON document (--output json)
//
// The document is stable; fields may be added, never renamed or removed:
//
//	{
//	  "mode": "iptables",                 // or "nftables"
//	  "packet": {"protocol": "tcp", "source": "10.0.0.2", "sourcePort": 0,
//	             "destination": "172.30.0.41", "port": 80, "from": "pod",
//	             "inInterface": ""},      // sourcePort, inInterface omitted when unset
//	  "verdict": "DNAT",                  // DNAT | REJECT | DROP | ACCEPT | NONE
//	  "service": "ns1/svc1:p80",          // "ns/name" for an unnamed port; omitted when none
//	  "endpoints": [                      // always present; empty unless verdict is DNAT
//	    {"address": "10.180.0.1:80", "probability": 0.5, "masqueraded": false,
//	     "path": [...]}                   // this branch's rules after the shared path
//	  ],
//	  "masqueraded": false,               // true when traffic to any endpoint is masqueraded
//	  "affinity": {"timeoutSeconds": 10800},   // omitted without ClientIP affinity
//	  "path": [{"table": "nat", "chain": "KUBE-SERVICES", "rule": "-A KUBE-SERVICES ..."}],
//	  "notes": ["..."]                    // omitted when empty
//	}
//
// Verdicts: DNAT, the packet goes to one of the endpoints; REJECT, a proxy rule
// rejects it (no endpoints, or an unused port of a ClusterIP in nftables mode); DROP,
// a rule or a chain policy drops it (no local endpoints, loadBalancerSourceRanges, an
// unallocated ClusterIP in nftables mode); ACCEPT, a proxy rule accepts it unchanged
// (a health check NodePort); NONE, no Service rule decided anything and the packet
// passes unmodified. Probabilities are rounded to 6 decimals and add up to 1. In
// "path", iptables rules are as iptables-save prints them; nftables rules are
// rendered from nft's JSON in nft syntax, with the matched element of a verdict map
// after "#". "table" is "nat"/"filter" in iptables mode, "ip kube-proxy" or
// "ip6 kube-proxy" in nftables mode.
package trace
