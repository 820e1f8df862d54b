package iptables

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
)

// fixedChains are the non-service chains this backend owns, per table.
var fixedChains = map[string][]string{
	"filter": {chainServices, chainExternalServices, chainForward, chainNodePorts, chainProxyFirewall, chainFirewall, chainCanary},
	"nat":    {chainServices, chainNodePorts, chainPostrouting, chainMarkMasq, chainCanary},
	"mangle": {chainCanary},
}

// Cleanup removes every rule and chain this backend (or an upstream kube-proxy in
// iptables mode) made: the jump rules first, then the chains, flushed before they are
// deleted so references between them do not block the deletion.
func Cleanup(r Runner) error {
	var errs []error
	for _, j := range jumpRules(true) {
		// A rule may have been inserted more than once; delete until it is gone.
		for i := 0; i < 10; i++ {
			if err := r.Run(append([]string{"-t", j.table, "-D", j.chain}, j.args...)...); err != nil {
				break
			}
		}
	}
	for _, table := range []string{"filter", "nat", "mangle"} {
		save, err := saveSkeleton(r, table)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		owned := map[string]bool{}
		for _, c := range fixedChains[table] {
			owned[c] = true
		}
		var del []string
		for _, c := range chainsIn(save) {
			if owned[c] || (table == "nat" && (isServiceChain(c) || isTreeChain(c))) {
				del = append(del, c)
			}
		}
		if len(del) == 0 {
			continue
		}
		// Declared in name order, which iptables-nft-restore handles in linear time
		// (see Builder.render).
		sort.Strings(del)
		var in bytes.Buffer
		fmt.Fprintf(&in, "*%s\n", table)
		for _, c := range del {
			fmt.Fprintf(&in, ":%s - [0:0]\n", c)
		}
		for _, c := range del {
			fmt.Fprintf(&in, "-X %s\n", c)
		}
		in.WriteString("COMMIT\n")
		if err := r.Restore(in.Bytes()); err != nil {
			errs = append(errs, fmt.Errorf("deleting %d chains of table %s: %w", len(del), table, err))
		}
	}
	return errors.Join(errs...)
}
