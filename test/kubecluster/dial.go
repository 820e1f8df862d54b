package kubecluster

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
)

// nsDialer opens TCP connections from inside a network namespace: the API server
// listens in the control plane's namespace, which the host cannot route to, and this
// program stays in the host's. One OS thread enters the namespace and makes every
// connection there (a socket keeps the namespace it was made in); it never leaves,
// and is never unlocked, so no other goroutine runs in the namespace.
type nsDialer struct {
	reqs chan dialReq
}

type dialReq struct {
	network, addr string
	reply         chan dialResult
}

type dialResult struct {
	conn net.Conn
	err  error
}

func newNSDialer(ns string) (*nsDialer, error) {
	d := &nsDialer{reqs: make(chan dialReq)}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // for good: see the type's comment
		h, err := netns.GetFromName(ns)
		if err != nil {
			ready <- fmt.Errorf("namespace %s: %w", ns, err)
			return
		}
		defer func() { _ = h.Close() }()
		if err := netns.Set(h); err != nil {
			ready <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		ready <- nil
		for r := range d.reqs {
			c, err := net.DialTimeout(r.network, r.addr, 10*time.Second)
			r.reply <- dialResult{c, err}
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return d, nil
}

// DialContext has the signature rest.Config.Dial wants.
func (d *nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	r := dialReq{network: network, addr: addr, reply: make(chan dialResult, 1)}
	select {
	case d.reqs <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case res := <-r.reply:
		return res.conn, res.err
	case <-ctx.Done():
		go func() {
			if res := <-r.reply; res.conn != nil {
				_ = res.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
}
