package trace

import (
	"net/netip"
	"testing"
)

func TestAddrInMasks(t *testing.T) {
	a := netip.MustParseAddr("10.96.3.6") // last octet 00000110
	for spec, want := range map[string]bool{
		"0.0.0.4/0.0.0.4":    true,  // bit 2 set
		"0.0.0.1/0.0.0.1":    false, // bit 0 clear
		"0.0.0.0/0.0.0.1":    true,
		"10.0.0.0/255.0.0.0": true,
		"10.96.3.6/32":       true,
		"11.0.0.0/8":         false,
	} {
		if got := addrIn(a, spec); got != want {
			t.Errorf("addrIn(%s, %s) = %v, want %v", a, spec, got, want)
		}
	}
	if !addrIn(netip.MustParseAddr("fd00::6"), "::4/::4") || addrIn(netip.MustParseAddr("fd00::6"), "::1/::1") {
		t.Errorf("IPv6 bit masks")
	}
}
