// Package healthcheck serves kproxy's own health (/healthz, /livez) with upstream
// kube-proxy's semantics: unhealthy when a change has waited longer than the health
// timeout (2 x syncPeriod) without a successful sync.
package healthcheck

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kproxy/kproxy/internal/metrics"
)

// StatusFunc reports when the oldest unsynced change was queued (zero when none) and
// when the last successful sync finished (zero before the first).
type StatusFunc func() (queuedAt, syncedAt time.Time)

// ProxyHealth answers /healthz and /livez.
type ProxyHealth struct {
	timeout time.Duration
	status  StatusFunc
	// nodeEligible, if set, adds upstream's node check to /healthz.
	nodeEligible func() bool
	// clock is what the age of a queued change is measured with: the clock of the
	// loop that StatusFunc reports on.
	clock clock.PassiveClock
	// metrics counts the answers by status code.
	metrics *metrics.Metrics
}

// NewProxyHealth returns a health server that counts its answers in m; timeout is
// upstream's 2 x syncPeriod.
func NewProxyHealth(timeout time.Duration, status StatusFunc, nodeEligible func() bool, clk clock.PassiveClock, m *metrics.Metrics) *ProxyHealth {
	return &ProxyHealth{timeout: timeout, status: status, nodeEligible: nodeEligible, clock: clk, metrics: m}
}

type body struct {
	LastUpdated  string `json:"lastUpdated"`
	CurrentTime  string `json:"currentTime"`
	NodeEligible *bool  `json:"nodeEligible,omitempty"`
	Healthy      bool   `json:"healthy"`
}

// healthy is false when a queued change is older than the timeout, or when nothing
// has ever been synced although a change has waited that long.
func (h *ProxyHealth) healthy() (bool, time.Time) {
	queuedAt, syncedAt := h.status()
	now := h.clock.Now()
	if !queuedAt.IsZero() && now.Sub(queuedAt) > h.timeout {
		return false, syncedAt
	}
	return true, syncedAt
}

// Healthy reports whether the sync loop keeps up (the /livez answer).
func (h *ProxyHealth) Healthy() bool {
	ok, _ := h.healthy()
	return ok
}

func (h *ProxyHealth) serve(w http.ResponseWriter, withNode bool) {
	ok, last := h.healthy()
	now := h.clock.Now()
	b := body{CurrentTime: now.Format(time.RFC3339Nano), Healthy: ok}
	if withNode && h.nodeEligible != nil {
		e := h.nodeEligible()
		b.NodeEligible = &e
		ok = ok && e
	}
	if withNode && last.IsZero() {
		// Not ready before the first sync: the source has not delivered its state (an
		// API server still unreachable) or the rules are not written yet. /livez stays
		// healthy meanwhile, like upstream's, so a slow start is not a restart.
		ok = false
		b.Healthy = false
	}
	if ok {
		// Upstream reports "now" when healthy, for old clients that compare the two.
		last = now
	}
	b.LastUpdated = last.Format(time.RFC3339Nano)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	counter := h.metrics.ProxyLivezTotal
	if withNode {
		counter = h.metrics.ProxyHealthzTotal
	}
	counter.WithLabelValues(strconv.Itoa(code)).Inc()
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(b)
}

// Handler serves /healthz and /livez.
func (h *ProxyHealth) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { h.serve(w, true) })
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { h.serve(w, false) })
	return mux
}

// Serve listens on addr until ctx ends, logging to ctx's logger; an empty addr or
// port 0 disables it.
func Serve(ctx context.Context, addr string, h http.Handler) {
	if addr == "" {
		return
	}
	if _, port, err := net.SplitHostPort(addr); err == nil && port == "0" {
		return
	}
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	for ctx.Err() == nil {
		err := srv.ListenAndServe()
		if errors.Is(err, http.ErrServerClosed) {
			return
		}
		klog.FromContext(ctx).Error(err, "HTTP server failed; retrying in 5s", "address", addr)
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}
