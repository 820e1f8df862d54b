package userspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// tcpListener accepts connections on one Service address and port and relays each to
// an endpoint. Each connection costs two goroutines, one per direction; io.Copy
// between two *net.TCPConn uses splice(2), so payload does not pass through user memory.
type tcpListener struct {
	key    listenerKey
	env    *relayEnv
	logger klog.Logger
	ln     *net.TCPListener
	route  atomic.Pointer[route]

	mu     sync.Mutex
	conns  map[*net.TCPConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func startTCP(logger klog.Logger, key listenerKey, env *relayEnv, r *route) (*tcpListener, error) {
	lc := net.ListenConfig{Control: listenControl(env.family, false)}
	ln, err := lc.Listen(context.Background(), env.network("tcp"), key.addr.String())
	if err != nil {
		return nil, fmt.Errorf("listen on %s for %s: %w", key, r.spec.service, err)
	}
	l := &tcpListener{key: key, env: env, logger: logger, ln: ln.(*net.TCPListener), conns: map[*net.TCPConn]struct{}{}}
	l.route.Store(r)
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

func (l *tcpListener) setRoute(r *route) { l.route.Store(r) }

// stop closes the listener and every connection it relays: the Service is gone (or has
// no endpoint left), like a connection whose rules were removed.
func (l *tcpListener) stop() {
	l.mu.Lock()
	l.closed = true
	_ = l.ln.Close()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// pruneFlows is part of listener; TCP connections outlive endpoint changes.
func (l *tcpListener) pruneFlows() {}

func (l *tcpListener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.logger.V(2).Info("Accept failed; retrying", "listener", l.key, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !l.track(c) {
			_ = c.Close()
			return
		}
		l.wg.Add(1)
		go l.serve(c)
	}
}

// track records a connection so stop can close it; false once the listener is stopped.
func (l *tcpListener) track(c *net.TCPConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *tcpListener) untrack(cs ...*net.TCPConn) {
	l.mu.Lock()
	for _, c := range cs {
		delete(l.conns, c)
	}
	l.mu.Unlock()
}

func (l *tcpListener) serve(client *net.TCPConn) {
	defer l.wg.Done()
	defer l.untrack(client)
	r := l.route.Load()
	from := client.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	if !r.allowed(from) {
		reset(client)
		return
	}
	up := l.dial(r, from)
	if up == nil {
		reset(client) // like a REJECT: the client sees a refused connection
		return
	}
	if !l.track(up) {
		_ = up.Close()
		_ = client.Close()
		return
	}
	defer l.untrack(up)
	relayTCP(client, up)
}

// dial connects to an endpoint, trying others (up to dialAttempts) when one fails.
func (l *tcpListener) dial(r *route, from netip.Addr) *net.TCPConn {
	set := r.setFor(from, l.env)
	d := net.Dialer{Timeout: l.env.dialTimeout}
	var tried []netip.AddrPort
	for range l.env.dialAttempts {
		ep, ok := r.bal.pick(set, from, tried)
		if !ok {
			break
		}
		c, err := d.Dial(l.env.network("tcp"), ep.String())
		if err == nil {
			return c.(*net.TCPConn)
		}
		l.logger.V(2).Info("Endpoint did not accept; trying another", "servicePort", r.spec.service, "endpoint", ep, "err", err)
		tried = append(tried, ep)
	}
	return nil
}

// relayTCP copies both ways until both sides are done. An orderly close (EOF) is passed
// on as a half close, so protocols that shut down one direction keep working; an error
// on either side resets both.
func relayTCP(a, b *net.TCPConn) {
	done := make(chan struct{})
	go func() {
		pipe(b, a)
		close(done)
	}()
	pipe(a, b)
	<-done
	_ = a.Close()
	_ = b.Close()
}

func pipe(dst, src *net.TCPConn) {
	if _, err := io.Copy(dst, src); err != nil {
		reset(dst)
		_ = src.Close()
		return
	}
	_ = dst.CloseWrite()
}

// reset closes a connection with an RST instead of a FIN.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}
