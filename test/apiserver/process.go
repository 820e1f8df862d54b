package apiserver

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// stopGrace is how long a stopped etcd or kube-apiserver gets to exit on SIGTERM.
const stopGrace = 15 * time.Second

// freePort asks the kernel for a port that is free on addr right now. Another
// program could take it before the server binds it; the ephemeral range is large
// enough that tests accept that.
func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, fmt.Errorf("free port on %s: %w", addr, err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
