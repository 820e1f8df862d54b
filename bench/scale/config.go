// Package scale is the side-by-side scale benchmark of kproxy and upstream
// kube-proxy (issue 7): one kube-apiserver holding N Services with M endpoints each,
// the namespace cluster of test/e2e, and each proxy implementation and mode run in
// node1 one after the other, measured with real packets and kernel ruleset dumps.
// bench/run.sh (go run ./bench/cmd/scale) is the one command; the smoke test runs a
// small size in CI.
package scale

import (
	"fmt"
	"time"
)

// Logger is where progress goes; *testing.T satisfies it.
type Logger interface {
	Logf(format string, args ...any)
}

// The proxy implementations and modes the benchmark knows.
const (
	ImplUpstream = "upstream"
	ImplKproxy   = "kproxy"
	ModeIPTables = "iptables"
	ModeNFTables = "nftables"
)

// Config is one benchmark run's sizes and iteration counts.
type Config struct {
	Services  int // N, including the two probe Services
	Endpoints int // M per fake Service; the probe Services have one real pod
	// BaselineServices is the size of the small run whose first-packet latency the
	// large run is compared with.
	BaselineServices int
	Modes            []string
	Impls            []string // run in this order within each mode

	MinSyncPeriod       time.Duration // --iptables-min-sync-period of both proxies
	LatencyChanges      int           // EndpointSlice changes timed for programming latency
	FirstPacketConnects int           // connects whose median is the first-packet latency
	BurstRate           int           // EndpointSlice updates per second during the burst
	BurstDuration       time.Duration
	SyncTimeout         time.Duration // longest wait for an initial sync
	CreateWorkers       int           // concurrent creates while loading the API server
	// KeepLogs leaves the work dir (the proxies' and API server's logs) after a
	// successful run too; a failed run always keeps it.
	KeepLogs bool

	Log Logger
	// HandleSignals makes Run clean up and exit on SIGINT or SIGTERM (for the
	// command; a test has its own timeout handling).
	HandleSignals bool
}

// Defaults is the size issue 7's targets are stated for.
func Defaults() Config {
	return Config{
		Services:            10000,
		Endpoints:           10,
		BaselineServices:    10,
		Modes:               []string{ModeIPTables, ModeNFTables},
		Impls:               []string{ImplUpstream, ImplKproxy},
		MinSyncPeriod:       time.Second,
		LatencyChanges:      100,
		FirstPacketConnects: 200,
		BurstRate:           100,
		BurstDuration:       60 * time.Second,
		SyncTimeout:         20 * time.Minute,
		CreateWorkers:       48,
	}
}

// SmokeConfig is small enough for CI: every figure is produced, in a few minutes.
func SmokeConfig() Config {
	c := Defaults()
	c.Services, c.Endpoints = 200, 3
	c.MinSyncPeriod = 250 * time.Millisecond
	c.LatencyChanges = 10
	c.FirstPacketConnects = 50
	c.BurstRate, c.BurstDuration = 20, 5*time.Second
	c.SyncTimeout = 3 * time.Minute
	return c
}

func (c Config) validate() error {
	switch {
	case c.Services < 3:
		return fmt.Errorf("bench: -services %d: need at least 3 (two probe Services and one more)", c.Services)
	case c.Endpoints < 1:
		return fmt.Errorf("bench: -endpoints %d: need at least 1", c.Endpoints)
	case c.BaselineServices < 2 || c.BaselineServices > c.Services:
		return fmt.Errorf("bench: baseline size %d must be within 2..%d", c.BaselineServices, c.Services)
	case c.Services > 60000:
		return fmt.Errorf("bench: -services %d does not fit the 10.96.0.0/16 Service range", c.Services)
	case c.LatencyChanges < 1 || c.FirstPacketConnects < 1:
		return fmt.Errorf("bench: -latency-changes and -connects must be positive")
	case c.BurstRate < 1 || c.BurstDuration <= 0:
		return fmt.Errorf("bench: -burst-rate and -burst-duration must be positive")
	}
	for _, m := range c.Modes {
		if m != ModeIPTables && m != ModeNFTables {
			return fmt.Errorf("bench: mode %q: want iptables or nftables", m)
		}
	}
	for _, i := range c.Impls {
		if i != ImplUpstream && i != ImplKproxy {
			return fmt.Errorf("bench: implementation %q: want upstream or kproxy", i)
		}
	}
	return nil
}

func (c Config) logf(format string, args ...any) {
	if c.Log != nil {
		c.Log.Logf(format, args...)
	}
}
