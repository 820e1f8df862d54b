package iptables

import (
	"errors"
	"strings"
	"syscall"

	gnft "github.com/google/nftables"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// ChainProbe is a chain a full sync always leaves in the kernel, and whether it always
// holds rules then. Upstream only watches its empty mangle canary, which notices a
// deleted chain (iptables -X, a firewalld reload) but not "iptables -t nat -F", which
// empties every chain and leaves them in place; the probes with rules notice that.
type ChainProbe struct {
	Table, Chain string
	NeedsRules   bool
}

// flushProbes are the probes of a flush check, the most telling of each table first:
// where each look costs a load of the whole table (iptables-legacy), only those are
// looked at.
var flushProbes = []ChainProbe{
	{"mangle", chainCanary, false},
	{"nat", chainMarkMasq, true}, // always one MARK rule
	{"filter", chainForward, true},
	{"nat", "PREROUTING", true},  // at least the jump to KUBE-SERVICES
	{"nat", "POSTROUTING", true}, // at least the jump to KUBE-POSTROUTING
	{"filter", "FORWARD", true},
}

// ChainsFlushed asks the kernel: with iptables-nft the tables are nf_tables tables
// and are asked over netlink (microseconds, so it can run several times a second);
// with iptables-legacy, or when netlink fails, one "iptables -S CHAIN" for the first
// probe of each table.
func (r *execRunner) ChainsFlushed(probes []ChainProbe) bool {
	if r.flavour == FlavourNFT {
		gone, err := nftProbesFlushed(r.family, probes)
		if err == nil {
			return gone
		}
		klog.V(4).InfoS("Cannot read the iptables-nft tables over netlink; asking the binary", "family", r.family, "err", err)
	}
	asked := map[string]bool{}
	for _, p := range probes {
		if asked[p.Table] {
			continue
		}
		asked[p.Table] = true
		if r.probeFlushedExec(p) {
			return true
		}
	}
	return false
}

func (r *execRunner) probeFlushedExec(p ChainProbe) bool {
	out, err := runOutput(r.iptables, "-w", "5", "-t", p.Table, "-S", p.Chain)
	if err != nil {
		// Exit status 1 is "no chain by that name"; other failures (a held lock)
		// prove nothing.
		return isExitStatus1(err)
	}
	return p.NeedsRules && !strings.Contains(string(out), "\n-A ") && !strings.HasPrefix(string(out), "-A ")
}

// nftProbesFlushed asks the kernel for the probe chains of iptables-nft's tables
// (tables "mangle", "nat", "filter" of family ip or ip6).
func nftProbesFlushed(f model.Family, probes []ChainProbe) (bool, error) {
	conn, err := gnft.New()
	if err != nil {
		return false, err
	}
	fam := gnft.TableFamilyIPv4
	if f == model.IPv6 {
		fam = gnft.TableFamilyIPv6
	}
	for _, p := range probes {
		rules, err := conn.GetRules(&gnft.Table{Name: p.Table, Family: fam}, &gnft.Chain{Name: p.Chain})
		if errors.Is(err, syscall.ENOENT) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if p.NeedsRules && len(rules) == 0 {
			return true, nil
		}
	}
	return false, nil
}
