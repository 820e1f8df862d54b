package nftables

import (
	"net/netip"
	"strconv"

	"github.com/kproxy/kproxy/internal/model"
)

func itoa[T ~int | ~int32](v T) string { return strconv.Itoa(int(v)) }

func familyAddrs(addrs []netip.Addr, f model.Family) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if model.FamilyOf(a) == f {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func familyPrefixes(ps []netip.Prefix, f model.Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if model.FamilyOf(p.Addr()) == f {
			out = append(out, p.Masked())
		}
	}
	return out
}

func familyEndpoints(eps []*model.Endpoint, f model.Family) []*model.Endpoint {
	out := make([]*model.Endpoint, 0, len(eps))
	for _, e := range eps {
		if model.FamilyOf(e.IP) == f {
			out = append(out, e)
		}
	}
	return out
}

// allowsAll reports whether a source range list admits every address (0.0.0.0/0 or
// ::/0), in which case, like upstream, no firewall chain is written.
func allowsAll(ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Bits() == 0 {
			return true
		}
	}
	return false
}
