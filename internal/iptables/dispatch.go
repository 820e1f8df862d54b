package iptables

import (
	"math/bits"
	"net/netip"
	"strings"
)

// Upstream kube-proxy puts one rule per Service address in nat KUBE-SERVICES, so the
// first packet of every connection walks them one by one: at 10,000 Services that is
// 10,000 rule evaluations before the last Service is found.
//
// kproxy keeps upstream's layout while the ruleset is small, and beyond that
// dispatches through a binary tree of chains keyed on the low bits of the destination
// address: KUBE-SERVICES jumps to the root, each level tests one bit with a
// non-contiguous mask (-d 0.0.0.4/0.0.0.4) and goes to the matching child, and the
// leaves hold the same per-address rules (comments and targets) upstream would have
// in KUBE-SERVICES. A packet evaluates about two rules per level plus a leaf of a
// dozen rules, however many Services there are. A change rewrites only the leaves
// whose addresses changed; the tree itself only changes with its depth, at full syncs.

const (
	// dispatchPrefix names the tree's chains: the root is KUBE-SVCT-R, its children
	// KUBE-SVCT-R0 and KUBE-SVCT-R1 (the bit tested), and so on.
	dispatchPrefix = "KUBE-SVCT-R"
	// flatLimit is the number of Service addresses up to which the rules stay in
	// KUBE-SERVICES itself, exactly as upstream writes them.
	flatLimit = 64
	// leafSize is the number of addresses a leaf is sized for.
	leafSize = 16
	// maxDepth bounds the tree (chain names stay short, and 2^14 leaves suffice
	// for a quarter million addresses).
	maxDepth = 14
)

// treeDepth is the tree depth for n distinct Service addresses; 0 means flat.
func treeDepth(n int) int {
	if n <= flatLimit {
		return 0
	}
	d := bits.Len(uint((n - 1) / leafSize))
	return min(d, maxDepth)
}

// lowBits returns the last 32 bits of an address, where the tree looks.
func lowBits(a netip.Addr) uint32 {
	b := a.As16()
	return uint32(b[12])<<24 | uint32(b[13])<<16 | uint32(b[14])<<8 | uint32(b[15])
}

// bucket is the leaf an address falls into at the given depth.
func bucket(a netip.Addr, depth int) uint32 {
	return lowBits(a) & (1<<depth - 1)
}

// treeChain names the chain for the first `level` bits of bucket b.
func treeChain(b uint32, level int) string {
	var s strings.Builder
	s.WriteString(dispatchPrefix)
	for i := 0; i < level; i++ {
		if b&(1<<i) != 0 {
			s.WriteByte('1')
		} else {
			s.WriteByte('0')
		}
	}
	return s.String()
}

// leafChain is the chain holding the rules of addresses in bucket b; with a flat
// layout that is KUBE-SERVICES itself.
func leafChain(b uint32, depth int) string {
	if depth == 0 {
		return chainServices
	}
	return treeChain(b, depth)
}

// bitMask is the -d match that selects addresses with bit i (of the last 32) set.
func bitMask(i int, ipv6 bool) string {
	v := uint32(1) << i
	var b [16]byte
	b[12], b[13], b[14], b[15] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	a := netip.AddrFrom16(b)
	if !ipv6 {
		a = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	return a.String() + "/" + a.String()
}

// writeTree declares every chain of the tree and writes its interior rules. Leaves
// are declared here too (so the interior can refer to them) and filled by the caller.
func writeTree(chains, rules *lines, depth int, ipv6 bool) {
	if depth == 0 {
		return
	}
	for level := 0; level <= depth; level++ {
		for b := uint32(0); b < 1<<level; b++ {
			chains.chain(treeChain(b, level))
			if level == depth {
				continue
			}
			self := treeChain(b, level)
			mask := bitMask(level, ipv6)
			rules.rule("-A", self, "-d", mask, "-g", treeChain(b|1<<level, level+1))
			rules.rule("-A", self, "-g", treeChain(b, level+1))
		}
	}
}

// isTreeChain reports whether a nat chain belongs to the dispatch tree.
func isTreeChain(name string) bool { return strings.HasPrefix(name, dispatchPrefix) }
