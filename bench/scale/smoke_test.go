package scale

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/apiserver"
)

// TestSmoke runs the whole benchmark at the smoke size, so CI exercises every
// measurement. It asserts that the benchmark completes and that every figure it
// reports exists and is positive; it sets no timing thresholds (CI machines vary).
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("the scale smoke run takes minutes")
	}
	if os.Geteuid() != 0 {
		t.Skip("the scale benchmark needs root (network namespaces, iptables, nftables)")
	}
	apiserver.RequireBinaries(t)
	cfg := SmokeConfig()
	cfg.Log = t
	rep, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("results:\n%s", rep.Markdown())

	if want := len(cfg.Modes) * len(cfg.Impls); len(rep.Runs) != want || len(rep.Baselines) != want {
		t.Fatalf("%d runs and %d baselines, want %d of each", len(rep.Runs), len(rep.Baselines), want)
	}
	for _, b := range rep.Baselines {
		if b.Err != nil {
			t.Errorf("baseline %s-%s: %v", b.Impl, b.Mode, b.Err)
			continue
		}
		positive(t, b.Impl+"-"+b.Mode+" baseline", map[string]float64{
			"sync": float64(b.Sync.Kernel), "first packet": float64(b.FirstPacket.Median),
		})
	}
	for _, x := range rep.Runs {
		name := x.Impl + "-" + x.Mode
		if x.Err != nil {
			t.Errorf("%s: %v", name, x.Err)
			continue
		}
		positive(t, name, map[string]float64{
			"initial sync (kernel)":   float64(x.Sync.Kernel),
			"initial sync (probe)":    float64(x.Sync.Probe),
			"initial sync CPU":        float64(x.Sync.CPU),
			"first packet":            float64(x.FirstPacket.Median),
			"latency p50":             float64(x.Latency.P50),
			"latency p99":             float64(x.Latency.P99),
			"burst updates":           float64(x.Burst.Updates),
			"burst markers":           float64(x.Burst.Markers),
			"burst max lag":           float64(x.Burst.MaxLag),
			"unchanged-Service conns": float64(x.Burst.ClientConns),
			"CPU":                     float64(x.CPU),
			"peak RSS":                float64(x.PeakRSS),
			"rules":                   float64(x.Size.Rules),
		})
		if len(x.Latency.Samples) != cfg.LatencyChanges {
			t.Errorf("%s: %d latency samples, want %d", name, len(x.Latency.Samples), cfg.LatencyChanges)
		}
		if x.FirstPacket.Samples < cfg.FirstPacketConnects*9/10 {
			t.Errorf("%s: only %d of %d first-packet connects succeeded", name, x.FirstPacket.Samples, cfg.FirstPacketConnects)
		}
		if x.Mode == ModeNFTables && x.Size.Elements < cfg.Services {
			t.Errorf("%s: %d nftables elements for %d Services", name, x.Size.Elements, cfg.Services)
		}
		if x.Latency.P99 > time.Minute || x.Burst.MaxLag > time.Minute {
			t.Errorf("%s: implausible figures: latency p99 %v, burst lag %v", name, x.Latency.P99, x.Burst.MaxLag)
		}
	}
	for _, mode := range cfg.Modes {
		for _, rw := range rep.rows(mode) {
			if strings.Contains(rw.upstream+rw.kproxy, "—") {
				t.Errorf("table row %q (%s) lacks a figure: upstream %q kproxy %q", rw.figure, mode, rw.upstream, rw.kproxy)
			}
		}
	}
}

func positive(t *testing.T, what string, figures map[string]float64) {
	t.Helper()
	for name, v := range figures {
		if !(v > 0) {
			t.Errorf("%s: %s is %v, want > 0", what, name, v)
		}
	}
}
