// Command scale runs the side-by-side scale benchmark of kproxy and upstream
// kube-proxy (see bench/scale) and writes its results table. It must run as root.
//
//	go run ./bench/cmd/scale                  # 10,000 Services x 10 endpoints
//	go run ./bench/cmd/scale -services 1000   # smaller
//	go run ./bench/cmd/scale -smoke           # what CI runs: small and quick
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kproxy/kproxy/bench/scale"
	"github.com/kproxy/kproxy/test/e2e/cluster"
)

type stderrLog struct{}

func (stderrLog) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func main() {
	smoke := false
	for _, a := range os.Args[1:] {
		if a == "-smoke" || a == "--smoke" || a == "-smoke=true" || a == "--smoke=true" {
			smoke = true
		}
	}
	cfg := scale.Defaults()
	if smoke {
		cfg = scale.SmokeConfig()
	}
	fs := flag.NewFlagSet("scale", flag.ExitOnError)
	fs.Bool("smoke", smoke, "small and quick (N=200, M=3, few iterations): what CI runs")
	fs.IntVar(&cfg.Services, "services", cfg.Services, "number of Services (N), including the two probe Services")
	fs.IntVar(&cfg.Endpoints, "endpoints", cfg.Endpoints, "endpoints per Service (M)")
	fs.IntVar(&cfg.BaselineServices, "baseline", cfg.BaselineServices, "Services in the small run first-packet latency is compared with")
	modes := fs.String("modes", strings.Join(cfg.Modes, ","), "proxy modes to measure")
	impls := fs.String("impls", strings.Join(cfg.Impls, ","), "implementations to measure, in order: upstream,kproxy")
	fs.DurationVar(&cfg.MinSyncPeriod, "min-sync-period", cfg.MinSyncPeriod, "--iptables-min-sync-period of both proxies")
	fs.IntVar(&cfg.LatencyChanges, "latency-changes", cfg.LatencyChanges, "EndpointSlice changes timed for programming latency")
	fs.IntVar(&cfg.FirstPacketConnects, "connects", cfg.FirstPacketConnects, "connects per first-packet latency figure")
	fs.IntVar(&cfg.BurstRate, "burst-rate", cfg.BurstRate, "EndpointSlice updates per second in the burst")
	fs.DurationVar(&cfg.BurstDuration, "burst-duration", cfg.BurstDuration, "length of the burst")
	fs.DurationVar(&cfg.SyncTimeout, "sync-timeout", cfg.SyncTimeout, "longest wait for a proxy's initial sync")
	fs.IntVar(&cfg.CreateWorkers, "create-workers", cfg.CreateWorkers, "concurrent creates while loading the API server")
	fs.BoolVar(&cfg.KeepLogs, "keep-logs", false, "keep the work dir with the proxies' logs after a successful run")
	out := fs.String("out", "", `results file (default bench/results.md; "-" for none; -smoke writes none unless given)`)
	_ = fs.Parse(os.Args[1:])
	cfg.Modes, cfg.Impls = splitList(*modes), splitList(*impls)
	cfg.Log, cfg.HandleSignals = stderrLog{}, true

	if *out == "" && !smoke {
		root, err := cluster.RepoRoot()
		if err != nil {
			fail(err)
		}
		*out = filepath.Join(root, "bench", "results.md")
	}
	rep, err := scale.Run(cfg)
	if err != nil {
		fail(err)
	}
	md := rep.Markdown()
	fmt.Print(md)
	if *out != "" && *out != "-" {
		if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
			fail(err)
		}
		fmt.Fprintf(os.Stderr, "results written to %s\n", *out)
	}
	if rep.Failed() {
		fmt.Fprintln(os.Stderr, "some measurements failed: see the details")
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
