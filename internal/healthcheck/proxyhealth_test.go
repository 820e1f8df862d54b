package healthcheck

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestHealthzNotReadyBeforeFirstSync(t *testing.T) {
	var queued, synced time.Time
	h := NewProxyHealth(time.Minute, func() (time.Time, time.Time) { return queued, synced }, nil)
	get := func(path string) int {
		rec := httptest.NewRecorder()
		h.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if got := get("/healthz"); got != http.StatusServiceUnavailable {
		t.Errorf("/healthz before the first sync = %d, want 503", got)
	}
	if got := get("/livez"); got != http.StatusOK {
		t.Errorf("/livez before the first sync = %d, want 200 (starting up is alive)", got)
	}
	synced = time.Now()
	if got := get("/healthz"); got != http.StatusOK {
		t.Errorf("/healthz after a sync = %d, want 200", got)
	}
	// A change waiting longer than the timeout makes both unhealthy.
	queued = time.Now().Add(-2 * time.Minute)
	if got, got2 := get("/healthz"), get("/livez"); got != 503 || got2 != 503 {
		t.Errorf("overdue change: healthz %d livez %d, want 503 503", got, got2)
	}
}
