package main

import (
	"strings"
	"testing"
)

// The registry holds kube-proxy's four modes with their upstream defaults, and an
// unknown mode is refused naming the ones there are.
func TestModes(t *testing.T) {
	for _, c := range []struct {
		name                    string
		primary, owns, failures bool
	}{
		// Upstream: nftables mode's nodePortAddresses default is "primary", the
		// others' is every address; only nftables mode has a sync-failure counter.
		{"iptables", false, false, false},
		{"nftables", true, false, true},
		{"ipvs", false, false, false},
		{"userspace", false, true, false},
	} {
		m, err := modeNamed(c.name)
		if err != nil {
			t.Fatalf("mode %s: %v", c.name, err)
		}
		if m.primaryNodePorts != c.primary || m.ownsNodePorts != c.owns || m.countsSyncFailures != c.failures {
			t.Errorf("mode %s: primaryNodePorts %v ownsNodePorts %v countsSyncFailures %v; want %v %v %v",
				c.name, m.primaryNodePorts, m.ownsNodePorts, m.countsSyncFailures, c.primary, c.owns, c.failures)
		}
		if m.families == nil || m.build == nil || m.removeLeftovers == nil || m.cleanup == nil {
			t.Errorf("mode %s lacks a part", c.name)
		}
	}
	_, err := modeNamed("kernelspace")
	if err == nil || !strings.Contains(err.Error(), `"kernelspace"`) || !strings.Contains(err.Error(), "ipvs, iptables, nftables, userspace") {
		t.Errorf("unknown mode: %v", err)
	}
}
