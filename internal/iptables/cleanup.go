package iptables

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
)

// fixedChains are the non-service chains this backend owns, per table.
var fixedChains = map[string][]string{
	"filter": {chainServices, chainExternalServices, chainForward, chainNodePorts, chainProxyFirewall, chainFirewall, chainCanary},
	"nat":    {chainServices, chainNodePorts, chainPostrouting, chainMarkMasq, chainCanary},
	"mangle": {chainCanary},
}

// Cleanup removes every rule and chain this backend (or an upstream kube-proxy in
// iptables mode) made, one restore per table: the jump rules in the built-in chains,
// then the chains, flushed by their declaration so references between them do not
// block the deletion. One restore matters at scale: every run of an iptables binary
// loads the whole table, which takes seconds at 10,000 Services, and deleting the
// jumps with one "iptables -D" each took minutes.
func Cleanup(r Runner) error {
	var errs []error
	for _, table := range []string{"filter", "nat", "mangle"} {
		save, err := r.SaveSkeleton(table)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var jumps []string
		for _, j := range jumpRules(true) {
			if j.table == table {
				for range countJumps(save, j) {
					jumps = append(jumps, jumpRuleLine("-D", j))
				}
			}
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
		if len(del) == 0 && len(jumps) == 0 {
			continue
		}
		if err := r.Restore(cleanupInput(table, jumps, del)); err != nil {
			if len(jumps) == 0 {
				errs = append(errs, fmt.Errorf("deleting %d chains of table %s: %w", len(del), table, err))
				continue
			}
			// A jump whose rule differs from ours (another version's) fails the
			// restore: delete the jumps one at a time, then the chains.
			deleteJumpsOneByOne(r, table)
			if err := r.Restore(cleanupInput(table, nil, del)); err != nil {
				errs = append(errs, fmt.Errorf("deleting %d chains of table %s: %w", len(del), table, err))
			}
		}
	}
	return errors.Join(errs...)
}

// cleanupInput is the restore input that deletes the jump rules (as "-D" lines) and
// then the chains, declared in name order, which iptables-nft-restore handles in
// linear time (see Builder.render).
func cleanupInput(table string, jumps, chains []string) []byte {
	chains = slices.Clone(chains)
	sort.Strings(chains)
	var in bytes.Buffer
	fmt.Fprintf(&in, "*%s\n", table)
	for _, c := range chains {
		fmt.Fprintf(&in, ":%s - [0:0]\n", c)
	}
	for _, j := range jumps {
		in.WriteString(j + "\n")
	}
	for _, c := range chains {
		fmt.Fprintf(&in, "-X %s\n", c)
	}
	in.WriteString("COMMIT\n")
	return in.Bytes()
}

// deleteJumpsOneByOne deletes the table's jump rules with one "iptables -D" each.
func deleteJumpsOneByOne(r Runner, table string) {
	for _, j := range jumpRules(true) {
		if j.table != table {
			continue
		}
		// A rule may have been inserted more than once; delete until it is gone.
		for i := 0; i < 10; i++ {
			if err := r.Run(append([]string{"-t", j.table, "-D", j.chain}, j.args...)...); err != nil {
				break
			}
		}
	}
}
