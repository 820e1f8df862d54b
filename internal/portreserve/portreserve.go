// Package portreserve holds a listening socket on every NodePort kproxy serves, so no
// other process on the node can bind it and then silently lose its traffic to the
// Service's rules (which DNAT before any socket sees the packet). A port that is
// already taken is logged with the Service that wants it, counted, and retried later;
// the Service's rules do not depend on the socket and keep working.
package portreserve

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// Port is one reservable port: protocol "TCP", "UDP" or "SCTP" and the number.
type Port struct {
	Protocol string
	Port     int
}

func (p Port) String() string { return fmt.Sprintf("%s/%d", p.Protocol, p.Port) }

// Want maps each NodePort to the Service ports ("ns/name:port") that use it.
type Want map[Port][]string

// FromSnapshot lists the NodePorts of a snapshot. SCTP is not reserved: Go has no
// SCTP sockets and a NodePort of that protocol is rare.
func FromSnapshot(snap *model.Snapshot) Want {
	w := Want{}
	for name, sp := range snap.Services {
		if sp.NodePort == 0 || (sp.Protocol != "TCP" && sp.Protocol != "UDP") {
			continue
		}
		k := Port{Protocol: string(sp.Protocol), Port: int(sp.NodePort)}
		w[k] = append(w[k], name.String())
	}
	for k := range w {
		sort.Strings(w[k])
	}
	return w
}

// Listen opens the socket that holds a port; tests replace it.
type Listen func(p Port) (io.Closer, error)

// Reserver holds the sockets. Its methods are safe for concurrent use.
type Reserver struct {
	listen Listen
	// retry is how long a port that could not be reserved waits for another try when
	// no sync comes first.
	retry time.Duration
	hooks Hooks

	mu     sync.Mutex
	want   Want
	held   map[Port]io.Closer
	failed map[Port]string // port -> last error, for "still in use" logs at V(2)
	timer  *time.Timer
	closed bool
}

// Hooks report to metrics and Events; any may be nil. They are called with the Reserver's
// lock held and must not call back into it.
type Hooks struct {
	// Failure is called for each failed attempt to reserve a port.
	Failure func(p Port)
	// Held is called with the held ports, sorted, whenever they may have changed.
	Held func(held []Port)
	// Conflict is called when a port first cannot be reserved (not at every retry),
	// with the Service ports that want it ("ns/name:port"), for an Event on the Node.
	Conflict func(p Port, services []string, err error)
}

// New returns a Reserver that opens real sockets on every address of the node and
// retries ports in use every retry (0: only at the next Sync).
func New(retry time.Duration, h Hooks) *Reserver {
	return NewWithListen(ListenAll, retry, h)
}

// NewWithListen is New with another way to open sockets.
func NewWithListen(l Listen, retry time.Duration, h Hooks) *Reserver {
	if h.Failure == nil {
		h.Failure = func(Port) {}
	}
	if h.Held == nil {
		h.Held = func([]Port) {}
	}
	if h.Conflict == nil {
		h.Conflict = func(Port, []string, error) {}
	}
	return &Reserver{listen: l, retry: retry, hooks: h, held: map[Port]io.Closer{}, failed: map[Port]string{}}
}

// Sync makes the held sockets match want: it releases ports no longer wanted and
// tries to reserve the missing ones (including those that failed before).
func (r *Reserver) Sync(want Want) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.want = want
	for p, c := range r.held {
		if _, ok := want[p]; !ok {
			_ = c.Close()
			delete(r.held, p)
			klog.V(2).InfoS("Released NodePort", "port", p)
		}
	}
	for p := range r.failed {
		if _, ok := want[p]; !ok {
			delete(r.failed, p)
		}
	}
	r.reserveMissing()
}

// reserveMissing tries every wanted port not held yet; r.mu is held.
func (r *Reserver) reserveMissing() {
	for _, p := range sortedPorts(r.want) {
		if _, ok := r.held[p]; ok {
			continue
		}
		c, err := r.listen(p)
		if err != nil {
			r.hooks.Failure(p)
			services := strings.Join(r.want[p], ", ")
			if _, before := r.failed[p]; !before {
				// Go's text for EADDRINUSE is "bind: address already in use".
				klog.ErrorS(err, "Cannot reserve NodePort; another process holds it, and it will not see this port's traffic while the Service's rules are in place; retrying later",
					"port", p, "services", services)
				r.hooks.Conflict(p, r.want[p], err)
			} else {
				klog.V(2).InfoS("NodePort still cannot be reserved", "port", p, "services", services, "err", err)
			}
			r.failed[p] = err.Error()
			continue
		}
		if _, before := r.failed[p]; before {
			klog.InfoS("Reserved NodePort after an earlier conflict", "port", p, "services", strings.Join(r.want[p], ", "))
			delete(r.failed, p)
		}
		r.held[p] = c
	}
	if len(r.failed) > 0 && r.retry > 0 && r.timer == nil {
		r.timer = time.AfterFunc(r.retry, r.retryFailed)
	}
	r.hooks.Held(r.heldLocked())
}

func (r *Reserver) retryFailed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timer = nil
	if !r.closed {
		r.reserveMissing()
	}
}

// Held lists the ports whose sockets are open, sorted.
func (r *Reserver) Held() []Port {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.heldLocked()
}

func (r *Reserver) heldLocked() []Port {
	out := make([]Port, 0, len(r.held))
	for p := range r.held {
		out = append(out, p)
	}
	sortPorts(out)
	return out
}

// Failed lists the wanted ports that could not be reserved, sorted.
func (r *Reserver) Failed() []Port {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Port, 0, len(r.failed))
	for p := range r.failed {
		out = append(out, p)
	}
	sortPorts(out)
	return out
}

// Close releases every port and stops retrying.
func (r *Reserver) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
	}
	for p, c := range r.held {
		_ = c.Close()
		delete(r.held, p)
	}
}

func sortedPorts(w Want) []Port {
	out := make([]Port, 0, len(w))
	for p := range w {
		out = append(out, p)
	}
	sortPorts(out)
	return out
}

func sortPorts(ps []Port) {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Port != ps[j].Port {
			return ps[i].Port < ps[j].Port
		}
		return ps[i].Protocol < ps[j].Protocol
	})
}

// ListenAll opens the port on the wildcard address: dual-stack when the node has
// IPv6, so it also blocks binds to any IPv4 or IPv6 address of the node. TCP
// connections that reach it (only those no rule DNATed) are accepted and closed at
// once rather than left in the backlog.
func ListenAll(p Port) (io.Closer, error) {
	addr := ":" + strconv.Itoa(p.Port)
	switch p.Protocol {
	case "TCP":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					time.Sleep(100 * time.Millisecond)
					continue
				}
				_ = c.Close()
			}
		}()
		return l, nil
	case "UDP":
		return net.ListenPacket("udp", addr)
	}
	return nil, fmt.Errorf("protocol %s cannot be reserved", p.Protocol)
}
