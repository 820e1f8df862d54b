package ipvs

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// ipvsOnlyChains are the chains only this mode uses; the others (KUBE-SERVICES,
// KUBE-POSTROUTING, ...) share their names with iptables mode and are deleted by
// iptables.Cleanup.
var ipvsOnlyChains = map[string]bool{
	chainNodePort: true, chainLoadBalancer: true, chainSourceRangesFirewall: true,
	chainIPVSFilter: true, chainIPVSOutFilter: true,
}

// CleanupOptions say how much Cleanup removes.
type CleanupOptions struct {
	// AllServices deletes every virtual server of the family (--cleanup); otherwise
	// only those whose address is bound to kube-ipvs0 (leftovers at a mode switch).
	AllServices  bool
	ExcludeCIDRs []netip.Prefix
}

// Cleanup removes this mode's state of one family: its jump rules, the rules in its
// chains (the chains only it uses are deleted), its ipsets, and its virtual servers
// and kube-ipvs0 addresses. h may be nil when the kernel has no IPVS. The dummy
// interface itself is removed by DeleteDummy, once for both families.
func Cleanup(f model.Family, ipt IPTables, sets IPSet, h Handle, links Links, opts CleanupOptions) error {
	var errs []error
	for _, j := range jumps {
		// Every copy of the jump goes (at most 10): -D fails once none is left.
		for range 10 {
			if ipt.Run(append([]string{"-t", j.table, "-D", j.chain}, j.args...)...) != nil {
				break
			}
		}
	}
	for _, table := range []string{"filter", "nat"} {
		save, err := ipt.Save(table)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		owned := natChains
		if table == "filter" {
			owned = filterChains
		}
		var in bytes.Buffer
		n := 0
		for _, c := range owned {
			if bytes.Contains(save, []byte("\n:"+c+" ")) {
				fmt.Fprintf(&in, ":%s - [0:0]\n", c)
				n++
			}
		}
		for _, c := range owned {
			if ipvsOnlyChains[c] && bytes.Contains(save, []byte("\n:"+c+" ")) {
				fmt.Fprintf(&in, "-X %s\n", c)
			}
		}
		if n == 0 {
			continue
		}
		if err := ipt.Restore([]byte("*" + table + "\n" + in.String() + "COMMIT\n")); err != nil {
			errs = append(errs, fmt.Errorf("removing ipvs-mode chains of table %s: %w", table, err))
		}
	}
	names, err := sets.Names()
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range names {
		if ownSet(f, name) {
			if err := sets.Destroy(name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	bound, err := links.Addrs(DummyInterface, f)
	if err != nil {
		errs = append(errs, err)
	}
	if h != nil {
		if err := deleteServices(h, f, bound, opts); err != nil {
			errs = append(errs, err)
		}
	}
	for _, a := range bound {
		if err := links.DelAddr(DummyInterface, a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func deleteServices(h Handle, f model.Family, bound []netip.Addr, opts CleanupOptions) error {
	current, err := kernelServices(h, f)
	if err != nil {
		return err
	}
	isBound := map[netip.Addr]bool{}
	for _, a := range bound {
		isBound[a] = true
	}
	var errs []error
	for key, s := range current {
		if excluded(key.Addr, opts.ExcludeCIDRs) || (!opts.AllServices && !isBound[key.Addr]) {
			continue
		}
		if err := h.DelService(s); err != nil {
			errs = append(errs, fmt.Errorf("deleting virtual server %s: %w", key, err))
		}
	}
	return errors.Join(errs...)
}

// ownSet reports whether an ipset is one this mode makes for the family.
func ownSet(f model.Family, name string) bool {
	if strings.HasPrefix(name, fmt.Sprintf("KPROXY-TMP-%d-", f)) {
		return true
	}
	for _, d := range setDefs {
		if name == setName(f, d.base) {
			return true
		}
	}
	return false
}

// DeleteDummy removes kube-ipvs0.
func DeleteDummy(links Links) error {
	existed, err := links.DeleteLink(DummyInterface)
	if existed && err == nil {
		klog.V(2).InfoS("Deleted the IPVS dummy interface", "interface", DummyInterface)
	}
	return err
}

// HasLeftovers reports whether IPVS mode left state on this node: kube-ipvs0 or one of
// its ipsets. Other modes remove it at start.
func HasLeftovers(links Links, sets IPSet) bool {
	if links.Exists(DummyInterface) {
		return true
	}
	names, _ := sets.Names()
	for _, n := range names {
		if ownSet(model.IPv4, n) || ownSet(model.IPv6, n) {
			return true
		}
	}
	return false
}

// HasIPTablesModeLeftovers reports whether iptables mode's per-service chains are in
// the nat table: ipvs mode then removes them at start, as they would otherwise keep
// DNATing Service traffic before IPVS sees it.
func HasIPTablesModeLeftovers(r IPTables) bool {
	save, err := r.Save("nat")
	if err != nil {
		return false
	}
	for _, line := range bytes.Split(save, []byte("\n")) {
		if len(line) > 1 && line[0] == ':' {
			if f := bytes.Fields(line[1:]); len(f) > 0 && IsIPTablesModeChain(string(f[0])) {
				return true
			}
		}
	}
	return false
}

// IsIPTablesModeChain reports whether a nat chain is one of iptables mode's: a
// per-service or per-endpoint chain, or KUBE-NODEPORTS. IPVS mode has none of them.
func IsIPTablesModeChain(name string) bool {
	for _, p := range []string{"KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-EXT-"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return name == "KUBE-NODEPORTS"
}
