package scale

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netns"
)

// nsThread runs functions on one OS thread that has entered a network namespace, so
// the benchmark can open sockets inside a pod without starting a process per
// connection: that keeps probes at microsecond precision and cheap enough to poll
// every few milliseconds. On Close the thread returns to its original namespace
// before it is unlocked; it is discarded (a locked goroutine that exits takes its
// thread along) only if that fails, so no other goroutine ever runs in the
// namespace. Threads must not be discarded needlessly: a process started with
// Pdeathsig from a thread (test/apiserver's etcd and kube-apiserver) is killed when
// that thread exits, and the Go runtime may have forked them from this one.
type nsThread struct {
	name string
	reqs chan func()
	done chan struct{}
}

func enterNS(nsName string) (*nsThread, error) {
	t := &nsThread{name: nsName, reqs: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer close(t.done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ready <- fmt.Errorf("current namespace: %w", err)
			return
		}
		defer func() { _ = orig.Close() }()
		h, err := netns.GetFromName(nsName)
		if err != nil {
			runtime.UnlockOSThread()
			ready <- fmt.Errorf("namespace %s: %w", nsName, err)
			return
		}
		defer func() { _ = h.Close() }()
		if err := netns.Set(h); err != nil {
			ready <- fmt.Errorf("enter namespace %s: %w", nsName, err)
			return // stays locked: the thread's namespace is unknown
		}
		ready <- nil
		for f := range t.reqs {
			f()
		}
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return t, nil
}

// Do runs f on the namespace's thread and waits for it.
func (t *nsThread) Do(f func()) {
	finished := make(chan struct{})
	t.reqs <- func() { f(); close(finished) }
	<-finished
}

// Close ends the thread.
func (t *nsThread) Close() {
	close(t.reqs)
	<-t.done
}

// probe is one TCP request to an echo responder.
type probe struct {
	At      time.Time     // when the connect started
	Connect time.Duration // SYN sent to connection established
	Backend string        // first word of the answer: the pod or sink address that answered
	Err     error
}

// TCP connects to target, measures the connect and reads the one-line answer. The
// socket is created on the namespace's thread, so it lives in the namespace.
func (t *nsThread) TCP(target string, timeout time.Duration) probe {
	var p probe
	t.Do(func() {
		p.At = time.Now()
		c, err := net.DialTimeout("tcp", target, timeout)
		p.Connect = time.Since(p.At)
		if err != nil {
			p.Err = err
			return
		}
		defer func() { _ = c.Close() }()
		_ = c.SetDeadline(time.Now().Add(timeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			p.Err = fmt.Errorf("read answer of %s: %w", target, err)
			return
		}
		p.Backend, _, _ = strings.Cut(strings.TrimSpace(line), " ")
	})
	return p
}
