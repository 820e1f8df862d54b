package iptables

import (
	"errors"
	"strings"
	"syscall"

	gnft "github.com/google/nftables"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// flushProbe is a chain a full sync always leaves in the kernel, and whether it always
// holds rules then. Upstream only watches its empty mangle canary, which notices a
// deleted chain (iptables -X, a firewalld reload) but not "iptables -t nat -F", which
// empties every chain and leaves them in place; the probes with rules notice that.
type flushProbe struct {
	table, chain string
	needsRules   bool
}

var flushProbes = []flushProbe{
	{"mangle", chainCanary, false},
	{"nat", chainMarkMasq, true}, // always one MARK rule
	{"nat", "PREROUTING", true},  // at least the jump to KUBE-SERVICES
	{"nat", "POSTROUTING", true}, // at least the jump to KUBE-POSTROUTING
	{"filter", chainForward, true},
	{"filter", "FORWARD", true},
}

// legacyProbes are the few probes worth an exec each in legacy mode, where the kernel
// can only be asked through the binaries.
var legacyProbes = []flushProbe{flushProbes[0], flushProbes[1], flushProbes[4]}

// rulesFlushed reports whether kproxy's rules were removed behind its back: a probe
// chain is gone or emptied. With iptables-nft the tables are nf_tables tables and
// are asked over netlink (microseconds, so it can run several times a second);
// with iptables-legacy a few "iptables -S CHAIN" runs; with a test Runner only the
// mangle canary is checked.
func rulesFlushed(r Runner) bool {
	er, ok := r.(*execRunner)
	if !ok {
		return !canaryPresent(r)
	}
	if er.flavour == FlavourNFT {
		gone, err := nftProbesFlushed(er.family)
		if err == nil {
			return gone
		}
		klog.V(4).InfoS("Cannot read the iptables-nft tables over netlink; asking the binary", "family", er.family, "err", err)
	}
	for _, p := range legacyProbes {
		if probeFlushedExec(r, p) {
			return true
		}
	}
	return false
}

func probeFlushedExec(r Runner, p flushProbe) bool {
	er := r.(*execRunner)
	out, err := runOutput(er.iptables, "-w", "5", "-t", p.table, "-S", p.chain)
	if err != nil {
		// Exit status 1 is "no chain by that name"; other failures (a held lock)
		// prove nothing.
		return isNotFound(err)
	}
	return p.needsRules && !strings.Contains(string(out), "\n-A ") && !strings.HasPrefix(string(out), "-A ")
}

// nftProbesFlushed asks the kernel for the probe chains of iptables-nft's tables
// (tables "mangle", "nat", "filter" of family ip or ip6).
func nftProbesFlushed(f model.Family) (bool, error) {
	conn, err := gnft.New()
	if err != nil {
		return false, err
	}
	fam := gnft.TableFamilyIPv4
	if f == model.IPv6 {
		fam = gnft.TableFamilyIPv6
	}
	for _, p := range flushProbes {
		rules, err := conn.GetRules(&gnft.Table{Name: p.table, Family: fam}, &gnft.Chain{Name: p.chain})
		if errors.Is(err, syscall.ENOENT) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if p.needsRules && len(rules) == 0 {
			return true, nil
		}
	}
	return false, nil
}
