package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestHandlerServesProxyModeAndProfilingOnlyWhenEnabled(t *testing.T) {
	off := Handler(prometheus.NewRegistry(), "nftables", false)
	if code, body := get(t, off, "/proxyMode"); code != 200 || body != "nftables" {
		t.Errorf("/proxyMode: %d %q, want 200 \"nftables\"", code, body)
	}
	if code, _ := get(t, off, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without profiling: %d, want 404", code)
	}
	on := Handler(prometheus.NewRegistry(), "iptables", true)
	if code, body := get(t, on, "/debug/pprof/"); code != 200 || !strings.Contains(body, "heap") {
		t.Errorf("/debug/pprof/ with profiling: %d, body without the heap profile", code)
	}
	if code, _ := get(t, on, "/debug/pprof/heap"); code != 200 {
		t.Errorf("/debug/pprof/heap with profiling: %d, want 200", code)
	}
}
