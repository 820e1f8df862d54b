// Package nodeaddr resolves the node's own parameters at every sync (Resolver): its
// addresses and primary IP, kube-proxy's nodePortAddresses setting (CIDRs and the
// keywords "primary", "localhost" and "all") into the addresses that accept NodePort
// and health check traffic, and the detect-local mode into a local-traffic detector.
package nodeaddr

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/kproxy/kproxy/internal/model"
)

// Selector is a parsed nodePortAddresses list.
type Selector struct {
	all       bool
	primary   bool
	localhost bool
	cidrs     []netip.Prefix
}

// Parse parses nodePortAddresses. An empty list means "all" unless defaultPrimary is
// set (the nftables mode's default is "primary").
func Parse(list []string, defaultPrimary bool) (*Selector, error) {
	s := &Selector{}
	if len(list) == 0 {
		if defaultPrimary {
			s.primary = true
		} else {
			s.all = true
		}
		return s, nil
	}
	for _, e := range list {
		switch e {
		case "all":
			s.all = true
		case "primary":
			s.primary = true
		case "localhost":
			s.localhost = true
		default:
			p, err := model.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("nodePortAddresses: %q is neither a CIDR nor one of all, primary, localhost", e)
			}
			s.cidrs = append(s.cidrs, p)
		}
	}
	return s, nil
}

// MustParse is Parse of a comma-separated list that must be valid (tests, constants).
func MustParse(list string) *Selector {
	s, err := Parse(strings.Split(list, ","), false)
	if err != nil {
		panic(err)
	}
	return s
}

// MatchesAll reports whether NodePorts answer on every local address.
func (s *Selector) MatchesAll() bool { return s.all }

// Resolve returns the addresses of the family on which NodePorts answer: the local
// addresses inside the CIDRs, the node's primary address, and loopback for localhost.
func (s *Selector) Resolve(f model.Family, node *model.Node, local []netip.Addr) []netip.Addr {
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	add := func(a netip.Addr) {
		if model.FamilyOf(a) == f && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, a := range local {
		for _, c := range s.cidrs {
			if c.Contains(a) {
				add(a)
			}
		}
		if s.localhost && a.IsLoopback() {
			add(a)
		}
	}
	if s.localhost {
		if f == model.IPv4 {
			add(netip.MustParseAddr("127.0.0.1"))
		} else {
			add(netip.IPv6Loopback())
		}
	}
	if s.primary {
		if p, ok := PrimaryIP(f, node, local); ok && !p.IsLoopback() {
			add(p)
		}
	}
	return out
}

// PrimaryIP is the node's first address of the family: from the Node object, or else
// the first global unicast local address.
func PrimaryIP(f model.Family, node *model.Node, local []netip.Addr) (netip.Addr, bool) {
	if node != nil {
		for _, a := range node.Addresses {
			if model.FamilyOf(a) == f {
				return a, true
			}
		}
	}
	for _, a := range local {
		if model.FamilyOf(a) == f && a.IsGlobalUnicast() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// LocalAddrs lists the addresses of every interface in this network namespace.
func LocalAddrs() ([]netip.Addr, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing local addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}
