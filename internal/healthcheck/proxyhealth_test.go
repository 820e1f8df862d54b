package healthcheck

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kproxy/kproxy/internal/metrics"
)

func TestHealthzNotReadyBeforeFirstSync(t *testing.T) {
	var queued, synced time.Time
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	clk := testingclock.NewFakePassiveClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	h := NewProxyHealth(time.Minute, func() (time.Time, time.Time) { return queued, synced }, nil, clk, m)
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
	synced = clk.Now()
	if got := get("/healthz"); got != http.StatusOK {
		t.Errorf("/healthz after a sync = %d, want 200", got)
	}
	// A change waiting longer than the timeout makes both unhealthy.
	queued = clk.Now()
	clk.SetTime(clk.Now().Add(time.Minute))
	if got, got2 := get("/healthz"), get("/livez"); got != 200 || got2 != 200 {
		t.Errorf("change waiting exactly the timeout: healthz %d livez %d, want 200 200", got, got2)
	}
	clk.SetTime(clk.Now().Add(time.Second))
	if got, got2 := get("/healthz"), get("/livez"); got != 503 || got2 != 503 {
		t.Errorf("overdue change: healthz %d livez %d, want 503 503", got, got2)
	}
	// Each answer is counted by code in the metrics the server was given.
	for _, c := range []struct {
		path    string
		counter *prometheus.CounterVec
		code    string
		want    float64
	}{
		{"/healthz", m.ProxyHealthzTotal, "503", 2}, {"/healthz", m.ProxyHealthzTotal, "200", 2},
		{"/livez", m.ProxyLivezTotal, "200", 2}, {"/livez", m.ProxyLivezTotal, "503", 1},
	} {
		if got := testutil.ToFloat64(c.counter.WithLabelValues(c.code)); got != c.want {
			t.Errorf("%s answers with %s counted %v times, want %v", c.path, c.code, got, c.want)
		}
	}
}
