// Package faultproxy is an HTTPS reverse proxy, written with the standard library
// only, that a test puts between a client (kproxy) and a real kube-apiserver to make
// the API server misbehave on demand: answer every request with an error, answer
// slowly, or cut the connections that carry watch streams. It terminates TLS with
// its own certificate (test/testpki), so every fault is injected at the HTTP level,
// and cuts connections at the TCP level (an RST, not a TLS close_notify), which is
// what a crashed server or a dropped load-balancer flow looks like to the client.
package faultproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/kproxy/kproxy/test/testpki"
)

// Fault is what the proxy does to the requests it receives.
type Fault int

const (
	// Pass forwards every request unchanged.
	Pass Fault = iota
	// Error500 answers every request with 500 InternalError.
	Error500
	// TooManyRequests answers every request with 429 and Retry-After: 1, as the API
	// server's priority and fairness does when it sheds load.
	TooManyRequests
	// Delay holds every request for Options.Delay before forwarding it.
	Delay
	// CutWatches forwards requests but cuts every connection carrying a watch stream
	// every Options.CutEvery, so the client's watches keep breaking mid-stream.
	CutWatches
)

func (f Fault) String() string {
	switch f {
	case Pass:
		return "pass"
	case Error500:
		return "error500"
	case TooManyRequests:
		return "error429"
	case Delay:
		return "delay"
	case CutWatches:
		return "cut-watches"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Options configures Start.
type Options struct {
	// Listen is the address to listen on ("IP:0" picks a port); its IP goes into the
	// serving certificate.
	Listen string
	// Upstream is the real API server's URL and UpstreamCA the PEM CA that signed its
	// serving certificate.
	Upstream   string
	UpstreamCA []byte
	// Delay is how long the Delay fault holds each request; default 5 s.
	Delay time.Duration
	// CutEvery is how often the CutWatches fault cuts the watch connections; default 1 s.
	CutEvery time.Duration
}

// Stats counts what the proxy did, so a test can prove a fault reached the client.
type Stats struct {
	Forwarded   int // requests passed to the API server (including delayed ones)
	Errors      int // requests answered with 500 or 429 by the proxy
	Delayed     int // requests held for Options.Delay
	CutConns    int // connections cut while they carried a watch
	OpenWatches int // watch requests in progress now
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	// URL is https://host:port of the proxy; CA is the PEM CA of its certificate,
	// for the client's kubeconfig.
	URL string
	CA  []byte

	opts Options
	srv  *http.Server
	ln   net.Listener
	rp   *httputil.ReverseProxy
	done chan struct{} // closed by Close: stops the cutter

	mu      sync.Mutex
	fault   Fault
	stats   Stats
	watches map[net.Conn]int // raw TCP connections -> open watch requests on them
	changed chan struct{}    // signals the cutter that the fault changed
}

type connKey struct{}

// Start listens on opts.Listen and serves until Close.
func Start(opts Options) (*Proxy, error) {
	if opts.Delay == 0 {
		opts.Delay = 5 * time.Second
	}
	if opts.CutEvery == 0 {
		opts.CutEvery = time.Second
	}
	up, err := url.Parse(opts.Upstream)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: upstream %q: %w", opts.Upstream, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(opts.UpstreamCA) {
		return nil, fmt.Errorf("faultproxy: upstream CA of %s holds no PEM certificate", opts.Upstream)
	}
	host, _, err := net.SplitHostPort(opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen address %q: %w", opts.Listen, err)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, fmt.Errorf("faultproxy: listen address %q is not an IP", opts.Listen)
	}
	pki, err := testpki.New("faultproxy-ca", []net.IP{ip}, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(pki.Cert, pki.Key)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: serving certificate: %w", err)
	}
	raw, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen on %s: %w", opts.Listen, err)
	}
	p := &Proxy{
		URL: "https://" + raw.Addr().String(), CA: pki.CA, opts: opts,
		ln: raw, done: make(chan struct{}), watches: map[net.Conn]int{}, changed: make(chan struct{}, 1),
	}
	p.rp = httputil.NewSingleHostReverseProxy(up)
	p.rp.Transport = &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		// The proxy's own connections to the API server are never faulted.
		IdleConnTimeout: 90 * time.Second,
	}
	// Watch responses are an endless chunked stream: pass each event on at once.
	p.rp.FlushInterval = -1
	// A cut watch is an expected copy error, not news.
	p.rp.ErrorLog = log.New(io.Discard, "", 0)
	p.srv = &http.Server{
		Handler: p,
		// The raw TCP connection rides in every request's context, so a watch can
		// be cut below TLS.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tls.Conn); ok {
				c = tc.NetConn()
			}
			return context.WithValue(ctx, connKey{}, c)
		},
		ReadHeaderTimeout: 30 * time.Second,
	}
	p.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	go func() { _ = p.srv.ServeTLS(raw, "", "") }()
	go p.cutter()
	return p, nil
}

// Set switches the fault. Entering any fault cuts the watch streams open at that
// moment: they were established before the fault and would otherwise keep
// delivering events through it, so the client would never meet the fault.
func (p *Proxy) Set(f Fault) {
	p.mu.Lock()
	p.fault = f
	p.mu.Unlock()
	if f != Pass {
		p.cutWatches()
	}
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// Fault is the current fault.
func (p *Proxy) Fault() Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fault
}

// Stats returns the counters so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	for _, n := range p.watches {
		s.OpenWatches += n
	}
	return s
}

// Close stops listening and cuts every connection.
func (p *Proxy) Close() {
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	_ = p.srv.Close()
}

// ServeHTTP applies the current fault to one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	fault := p.fault
	p.mu.Unlock()
	switch fault {
	case Error500:
		p.count(func(s *Stats) { s.Errors++ })
		writeStatus(w, http.StatusInternalServerError, "InternalError", "")
		return
	case TooManyRequests:
		p.count(func(s *Stats) { s.Errors++ })
		writeStatus(w, http.StatusTooManyRequests, "TooManyRequests", "1")
		return
	case Delay:
		p.count(func(s *Stats) { s.Delayed++ })
		select {
		case <-time.After(p.opts.Delay):
		case <-r.Context().Done():
			return
		}
	}
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok && isWatch(r) {
		p.mu.Lock()
		p.watches[c]++
		p.mu.Unlock()
		defer func() {
			p.mu.Lock()
			if p.watches[c]--; p.watches[c] <= 0 {
				delete(p.watches, c)
			}
			p.mu.Unlock()
		}()
	}
	p.count(func(s *Stats) { s.Forwarded++ })
	p.rp.ServeHTTP(w, r)
}

func (p *Proxy) count(f func(*Stats)) {
	p.mu.Lock()
	f(&p.stats)
	p.mu.Unlock()
}

// isWatch tells a watch request (GET ...?watch=true) from a list or a write.
func isWatch(r *http.Request) bool {
	w := r.URL.Query().Get("watch")
	return w == "true" || w == "1"
}

// writeStatus answers with a metav1.Status as the API server spells it, so the
// client sees the same error it would get from a real server in trouble.
func writeStatus(w http.ResponseWriter, code int, reason, retryAfter string) {
	w.Header().Set("Content-Type", "application/json")
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"injected by faultproxy","reason":%q,"code":%d}`+"\n", reason, code)
}

// cutter cuts the watch connections every CutEvery while the fault is CutWatches.
func (p *Proxy) cutter() {
	t := time.NewTicker(p.opts.CutEvery)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-p.changed:
		case <-t.C:
			if p.Fault() == CutWatches {
				p.cutWatches()
			}
		}
	}
}

// cutWatches resets every TCP connection that carries a watch stream now.
func (p *Proxy) cutWatches() {
	p.mu.Lock()
	conns := make([]net.Conn, 0, len(p.watches))
	for c := range p.watches {
		conns = append(conns, c)
	}
	p.stats.CutConns += len(conns)
	p.mu.Unlock()
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			// Linger 0: close with an RST, as a crashed peer or a dropped flow would.
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
}
