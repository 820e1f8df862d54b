package nftables

import (
	"context"

	"sigs.k8s.io/knftables"

	"github.com/kproxy/kproxy/internal/model"
)

// Kernel is what the backend asks of the kernel for one family's kube-proxy table:
// knftables' transactions and listings, and two shortcuts around the cost of the nft
// binary, which loads the whole table for every command. New returns the kernel's;
// NewFakeKernel one over knftables' fake, whose state tests read.
type Kernel interface {
	knftables.Interface
	// CountRules counts the rules of one chain of the table; a missing table or chain
	// holds none.
	CountRules(ctx context.Context, chain string) (int, error)
	// RuleCounts counts the rules of every chain of the table (chains without rules
	// may be absent); a missing table holds none.
	RuleCounts(ctx context.Context) (map[string]int, error)
	// writeElements adds and deletes set and map elements in one transaction: the
	// same change a knftables transaction of those element operations makes.
	writeElements(ctx context.Context, ops []elementOp) error
}

// kernelTable is the kernel's table: knftables over netlink, rule counts and element
// writes straight over netlink (see netlink.go and elements.go).
type kernelTable struct {
	knftables.Interface
	family model.Family
}

func (k kernelTable) CountRules(_ context.Context, chain string) (int, error) {
	return countRulesNetlink(k.family, chain)
}

func (k kernelTable) RuleCounts(context.Context) (map[string]int, error) {
	return ruleCountsNetlink(k.family)
}

func (k kernelTable) writeElements(_ context.Context, ops []elementOp) error {
	return writeElementsNetlink(k.family, ops)
}

// NewFakeKernel returns a Kernel that does everything through nft, an implementation of
// knftables' interface: knftables' fake in tests, whose state then follows every
// change the backend makes, element writes included.
func NewFakeKernel(nft knftables.Interface) Kernel { return fakeKernel{nft} }

type fakeKernel struct{ knftables.Interface }

func (k fakeKernel) CountRules(ctx context.Context, chain string) (int, error) {
	rules, err := k.ListRules(ctx, chain)
	if knftables.IsNotFound(err) {
		return 0, nil
	}
	return len(rules), err
}

func (k fakeKernel) RuleCounts(ctx context.Context) (map[string]int, error) {
	return ruleCountsListed(ctx, k.Interface)
}

func (k fakeKernel) writeElements(ctx context.Context, ops []elementOp) error {
	tx := k.NewTransaction()
	for _, op := range ops {
		if op.del {
			tx.Delete(op.el.object())
		} else {
			tx.Add(op.el.object())
		}
	}
	return k.Run(ctx, tx)
}
