package nftables

import (
	"errors"
	"syscall"

	gnft "github.com/google/nftables"

	"github.com/kproxy/kproxy/internal/model"
)

// gnftFamily is the netlink table family of an IP family.
func gnftFamily(f model.Family) gnft.TableFamily {
	if f == model.IPv6 {
		return gnft.TableFamilyIPv6
	}
	return gnft.TableFamilyIPv4
}

// countRulesNetlink counts the rules of one chain of the family's table with a
// kernel-filtered netlink dump. The nft CLI (1.0.x) loads the whole table to list one
// chain, which takes seconds at ten thousand Services; this costs microseconds, so it
// can run several times a second (the flush check). A missing table or chain counts as zero rules.
func countRulesNetlink(f model.Family, chain string) (int, error) {
	conn, err := gnft.New()
	if err != nil {
		return 0, err
	}
	rules, err := conn.GetRules(&gnft.Table{Name: TableName, Family: gnftFamily(f)}, &gnft.Chain{Name: chain})
	if errors.Is(err, syscall.ENOENT) {
		return 0, nil
	}
	return len(rules), err
}
