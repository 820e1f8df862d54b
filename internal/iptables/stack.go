package iptables

import "syscall"

// childStack is the stack limit the kernel tools kproxy runs get.
const childStack = 1 << 30

// RaiseChildStackLimit raises this process's soft stack limit, which the programs it
// runs inherit, to 1 GiB (or the hard limit, if lower). iptables-nft-save 1.8.9 (in
// libnftnl) needs more than the usual 8 MiB on a large table: on the nat table of
// 10,000 Services x 10 endpoints (322,000 rules) it died of a stack overflow, and with
// it --cleanup, trace and any other save. Go's own stacks do not depend on this limit.
// It returns the limit now in force.
func RaiseChildStackLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_STACK, &lim); err != nil {
		return 0, err
	}
	// RLIM_INFINITY is the largest value, so plain comparisons do.
	want := min(uint64(childStack), lim.Max)
	if lim.Cur < want {
		lim.Cur = want
		if err := syscall.Setrlimit(syscall.RLIMIT_STACK, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}
