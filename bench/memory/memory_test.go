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
