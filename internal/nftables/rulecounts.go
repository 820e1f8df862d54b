package nftables

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/kproxy/kproxy/internal/model"
)

// Why rule counts: a full sync leaves a per-Service chain alone when the previous sync
// wrote it with the same rules (rewriting ten thousand of them costs nft a minute).
// That trusts the kernel to still hold what was written; another agent deleting or
// inserting a rule in such a chain would then never be repaired. Counting the rules
// of every chain of the table costs one netlink dump (milliseconds at ten thousand
// Services, once per full sync), and a chain whose count differs is rewritten.

// ruleCountsNetlink counts the rules of every chain of the family's table with one
// netlink dump of the table's rules. A missing table has no chains.
func ruleCountsNetlink(f model.Family) (map[string]int, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer func() { _ = conn.Close() }()
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_RULE_TABLE, Data: []byte(TableName + "\x00")},
	})
	if err != nil {
		return nil, err
	}
	req := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append([]byte{byte(gnftFamily(f)), unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	msgs, err := conn.Execute(req)
	if errors.Is(err, syscall.ENOENT) {
		return map[string]int{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dump the rules of table %s: %w", TableName, err)
	}
	counts := map[string]int{}
	for _, m := range msgs {
		chain, err := ruleChain(m.Data)
		if err != nil {
			return nil, err
		}
		counts[chain]++
	}
	return counts, nil
}

// ruleChain is the chain named in one NFT_MSG_NEWRULE message (an nfgenmsg header,
// then attributes).
func ruleChain(data []byte) (string, error) {
	if len(data) < 4 {
		return "", fmt.Errorf("nftables rule message of %d bytes: shorter than its header", len(data))
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return "", fmt.Errorf("nftables rule message: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	chain, found := "", false
	for ad.Next() {
		if ad.Type() == unix.NFTA_RULE_CHAIN {
			chain, found = strings.TrimRight(ad.String(), "\x00"), true
		}
	}
	if err := ad.Err(); err != nil {
		return "", fmt.Errorf("nftables rule message: %w", err)
	}
	if !found {
		return "", errors.New("nftables rule message without a chain")
	}
	return chain, nil
}

// ruleCountsListed counts the rules of every chain through knftables' listings: for
// the fake kernel, where one listing per chain costs nothing.
func ruleCountsListed(ctx context.Context, nft knftables.Interface) (map[string]int, error) {
	chains, err := nft.List(ctx, "chain")
	if knftables.IsNotFound(err) {
		return map[string]int{}, nil
	}
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, c := range chains {
		rules, err := nft.ListRules(ctx, c)
		if err != nil {
			return nil, err
		}
		counts[c] = len(rules)
	}
	return counts, nil
}
