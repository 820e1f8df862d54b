package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// parseAddrSloppy parses an IP address the way Kubernetes' ParseIPSloppy does:
// IPv4 octets may carry leading zeros, read as decimal ("010.0.0.1" is 10.0.0.1).
// netip rejects those, and old manifests still contain them.
func parseAddrSloppy(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a, nil
	}
	octets := strings.Split(s, ".")
	if len(octets) != 4 || strings.Contains(s, ":") {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	var b [4]byte
	for i, o := range octets {
		n, err := strconv.Atoi(o)
		if err != nil || n < 0 || n > 255 || o == "" || o[0] == '+' || o[0] == '-' {
			return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
		}
		b[i] = byte(n)
	}
	return netip.AddrFrom4(b), nil
}

// parsePrefixSloppy parses a CIDR with parseAddrSloppy's leniency and returns
// the network (host bits cleared), as Kubernetes' ParseCIDRSloppy does.
func parsePrefixSloppy(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	addr, bitsStr, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (want address/length)", s)
	}
	a, err := parseAddrSloppy(addr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: %w", s, err)
	}
	bits, err := strconv.Atoi(bitsStr)
	if err != nil || bits < 0 || bits > a.BitLen() || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: bad prefix length %q", s, bitsStr)
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

// parseDualStackCIDRs parses a comma-separated list holding one CIDR, or two
// CIDRs of different IP families. Empty input gives nil.
func parseDualStackCIDRs(s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return nil, fmt.Errorf("at most two CIDRs (one IPv4, one IPv6) are allowed, got %d", len(parts))
	}
	var out []netip.Prefix
	for _, p := range parts {
		pfx, err := parsePrefixSloppy(p)
		if err != nil {
			return nil, err
		}
		out = append(out, pfx)
	}
	if len(out) == 2 && out[0].Addr().Is4() == out[1].Addr().Is4() {
		return nil, fmt.Errorf("two CIDRs must be a dual-stack pair (one IPv4, one IPv6), got %s and %s", out[0], out[1])
	}
	return out, nil
}
