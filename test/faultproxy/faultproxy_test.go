package faultproxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// upstream is a stand-in API server: /list answers "items", /watch?watch=true
// streams one "event N" line every 20 ms until the client goes away.
func upstream(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") != "true" {
			_, _ = io.WriteString(w, "items\n")
			return
		}
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "event %d\n", i); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func start(t *testing.T, opts Options) (*Proxy, *http.Client) {
	t.Helper()
	up := upstream(t)
	opts.Listen = "127.0.0.1:0"
	opts.Upstream = up.URL
	opts.UpstreamCA = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw})
	p, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.CA)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	t.Cleanup(client.CloseIdleConnections)
	return p, client
}

func get(t *testing.T, c *http.Client, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func TestPassAndErrors(t *testing.T) {
	p, c := start(t, Options{})
	if code, _, body := get(t, c, p.URL+"/list"); code != 200 || body != "items\n" {
		t.Errorf("pass: %d %q, want 200 the upstream's body", code, body)
	}
	p.Set(Error500)
	code, _, body := get(t, c, p.URL+"/list")
	if code != 500 || !strings.Contains(body, `"reason":"InternalError"`) {
		t.Errorf("error500: %d %q, want 500 with a Status of reason InternalError", code, body)
	}
	p.Set(TooManyRequests)
	code, hdr, body := get(t, c, p.URL+"/list")
	if code != 429 || hdr.Get("Retry-After") != "1" || !strings.Contains(body, `"code":429`) {
		t.Errorf("error429: %d Retry-After %q %q, want 429, 1 and a Status", code, hdr.Get("Retry-After"), body)
	}
	p.Set(Pass)
	if code, _, _ := get(t, c, p.URL+"/list"); code != 200 {
		t.Errorf("back to pass: %d", code)
	}
	if s := p.Stats(); s.Errors != 2 || s.Forwarded != 2 {
		t.Errorf("stats %+v, want 2 errors and 2 forwarded", s)
	}
}

func TestDelay(t *testing.T) {
	p, c := start(t, Options{Delay: 400 * time.Millisecond})
	p.Set(Delay)
	start := time.Now()
	code, _, _ := get(t, c, p.URL+"/list")
	if took := time.Since(start); code != 200 || took < 400*time.Millisecond {
		t.Errorf("delay: %d after %v, want 200 after at least 400ms", code, took)
	}
	if s := p.Stats(); s.Delayed != 1 {
		t.Errorf("stats %+v, want 1 delayed", s)
	}
}

// openWatch starts a watch through the proxy and returns a reader of its events once
// the first one arrived; the stream is closed when the test ends.
func openWatch(t *testing.T, p *Proxy, c *http.Client) *bufio.Reader {
	t.Helper()
	resp, err := c.Get(p.URL + "/watch?watch=true")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	r := bufio.NewReader(resp.Body)
	if line, err := r.ReadString('\n'); err != nil || line != "event 0\n" {
		t.Fatalf("first watch event: %q %v", line, err)
	}
	return r
}

// watchBreaks reads events until the stream fails; it fails the test if the stream
// is still alive after timeout.
func watchBreaks(t *testing.T, r *bufio.Reader, timeout time.Duration) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := r.ReadString('\n'); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case err := <-errc:
		t.Logf("watch stream ended: %v", err)
	case <-time.After(timeout):
		t.Fatalf("watch stream still open %v after it should have been cut", timeout)
	}
}

func TestCutWatches(t *testing.T) {
	p, c := start(t, Options{CutEvery: 100 * time.Millisecond})
	r := openWatch(t, p, c)
	if s := p.Stats(); s.OpenWatches != 1 {
		t.Fatalf("stats %+v, want 1 open watch", s)
	}
	p.Set(CutWatches)
	watchBreaks(t, r, 2*time.Second)
	// Lists still work during the fault, and a new watch is cut again.
	c.CloseIdleConnections()
	if code, _, body := get(t, c, p.URL+"/list"); code != 200 || body != "items\n" {
		t.Errorf("list during cut-watches: %d %q", code, body)
	}
	r2 := openWatch(t, p, c)
	watchBreaks(t, r2, 2*time.Second)
	if s := p.Stats(); s.CutConns < 2 {
		t.Errorf("stats %+v, want at least 2 connections cut", s)
	}
}

// TestFaultCutsOpenWatches: switching to an error fault cuts the watches opened
// before it, so the client meets the fault instead of a stream that outlives it.
func TestFaultCutsOpenWatches(t *testing.T) {
	p, c := start(t, Options{})
	r := openWatch(t, p, c)
	p.Set(Error500)
	watchBreaks(t, r, 2*time.Second)
}
