package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// nsProber opens TCP connections from inside a network namespace without starting a
// process per request, so that tight polling (latency measurement, a client loop
// through an API outage) has millisecond resolution. Each dial runs on a locked OS
// thread that enters the namespace only for the dial and returns to its own
// namespace before it is unlocked: a socket stays in the namespace it was made in,
// and no thread of the test process is left in a namespace that cleanup deletes
// (which kills the processes inside, judged by their main thread).
type nsProber struct {
	name string
	h    netns.NsHandle
}

func newNSProber(nsName string) (*nsProber, error) {
	h, err := netns.GetFromName(nsName)
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", nsName, err)
	}
	return &nsProber{name: nsName, h: h}, nil
}

// Close releases the namespace handle.
func (p *nsProber) Close() { _ = p.h.Close() }

// dial connects to target from inside the namespace.
func (p *nsProber) dial(target string, timeout time.Duration) (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("current namespace: %w", err)
	}
	defer func() { _ = orig.Close() }()
	if err := netns.Set(p.h); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter namespace %s: %w", p.name, err)
	}
	c, dialErr := net.DialTimeout("tcp", target, timeout)
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: Go ends a locked thread with its goroutine, so
		// nothing else ever runs in the wrong namespace.
		if c != nil {
			_ = c.Close()
		}
		return nil, fmt.Errorf("leave namespace %s: %w", p.name, err)
	}
	runtime.UnlockOSThread()
	return c, dialErr
}

// probe is one TCP request to an echoserver: the backend that answered, or the
// error class the echoserver client would print ("refused", "timeout", ...).
type probe struct {
	Backend string
	Seen    string // the source IP:port the backend saw
	Error   string
}

// TCP connects to target, reads the echoserver's one-line answer and returns it.
// The socket is created on the namespace's thread; the wait is done there too.
func (p *nsProber) TCP(target string, timeout time.Duration) probe {
	var r probe
	deadline := time.Now().Add(timeout)
	c, err := p.dial(target, timeout)
	if err != nil {
		r.Error = classifyErr(err)
		return r
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(deadline)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		r.Error = classifyErr(err)
		return r
	}
	r.Backend, r.Seen, _ = strings.Cut(strings.TrimSpace(line), " ")
	return r
}

// HTTPStatus sends a bare HTTP/1.0 GET and returns the status code and body (for
// kproxy's health endpoints, which listen inside the node namespace).
func (p *nsProber) HTTPStatus(hostPort, path string, timeout time.Duration) (int, string, error) {
	c, err := p.dial(hostPort, timeout)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, hostPort); err != nil {
		return 0, "", err
	}
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil {
		return 0, "", err
	}
	var code int
	if _, err := fmt.Sscanf(status, "HTTP/1.%d %d", new(int), &code); err != nil {
		return 0, "", fmt.Errorf("bad status line %q", status)
	}
	var b strings.Builder
	inBody := false
	for {
		line, err := br.ReadString('\n')
		if inBody {
			b.WriteString(line)
		} else if strings.TrimSpace(line) == "" {
			inBody = true
		}
		if err != nil {
			break
		}
	}
	return code, strings.TrimSpace(b.String()), nil
}

func classifyErr(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	default:
		return "other: " + err.Error()
	}
}
