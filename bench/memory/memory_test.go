package memory

import "testing"

// A small size runs in CI: every figure is produced and grows with the input. No
// thresholds: the figures are for the benchmark's report.
func TestMeasureSmall(t *testing.T) {
	a, err := Measure(200, 3)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Measure(400, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("200 x 3: %+v; 400 x 3: %+v", a, b)
	for name, pair := range map[string][2]int64{
		"model": {a.Model, b.Model}, "iptables": {a.IPTables, b.IPTables},
		"nftables": {a.NFTables, b.NFTables}, "restore input": {a.RestoreInput, b.RestoreInput},
	} {
		if pair[0] <= 0 || pair[1] <= pair[0] {
			t.Errorf("%s: %d bytes for 200 Services, %d for 400: want positive and growing", name, pair[0], pair[1])
		}
	}
}

// A cold start at a small size produces every phase, a transaction and (nftables) a
// netlink batch. No thresholds: the figures are for docs/scale.md.
func TestMeasurePeakSmall(t *testing.T) {
	for _, mode := range []string{"iptables", "nftables"} {
		p, err := MeasurePeak(mode, 200, 3, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %+v", mode, p)
		if len(p.Phases) != 3 {
			t.Fatalf("%s: %d phases, want 3", mode, len(p.Phases))
		}
		for _, ph := range p.Phases {
			if ph.Live <= 0 || ph.PeakHeap <= 0 || ph.Allocated <= 0 {
				t.Errorf("%s: phase %q: %+v, want positive figures", mode, ph.Name, ph)
			}
		}
		if p.TxBytes == 0 || (mode == "nftables") != (p.NetlinkBytes > 0) {
			t.Errorf("%s: transaction %d bytes, netlink batch %d bytes", mode, p.TxBytes, p.NetlinkBytes)
		}
	}
}
