package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// Reply is one request's outcome, printed as one JSON line. The e2e cluster package
// decodes the same field names.
type Reply struct {
	Backend string  `json:"backend"`
	Seen    string  `json:"seen"`
	Error   string  `json:"error"`
	Ms      float64 `json:"ms"`
}

type clientOpts struct {
	proto      string
	target     string
	count      int
	timeout    time.Duration
	interval   time.Duration
	sourcePort int
	sourceIP   string
}

func clientMain(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	var o clientOpts
	fs.StringVar(&o.proto, "proto", "tcp", "tcp, udp or sctp (an INIT/INIT-ACK exchange over raw sockets)")
	fs.StringVar(&o.target, "target", "", "IP:PORT ([IPv6]:PORT) to send to")
	fs.IntVar(&o.count, "count", 1, "number of requests")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Second, "timeout of each request")
	fs.DurationVar(&o.interval, "interval", 0, "pause between requests")
	fs.IntVar(&o.sourcePort, "source-port", 0, "fixed local port (UDP: one socket for all requests)")
	fs.StringVar(&o.sourceIP, "source-ip", "", "local address to send from")
	_ = fs.Parse(args)
	if o.target == "" {
		return errors.New("--target is required")
	}
	if o.proto != "tcp" && o.proto != "udp" && o.proto != "sctp" {
		return fmt.Errorf("--proto %q: want tcp, udp or sctp", o.proto)
	}
	var local net.Addr
	if o.sourceIP != "" || o.sourcePort != 0 {
		ip := net.ParseIP(o.sourceIP)
		if o.sourceIP != "" && ip == nil {
			return fmt.Errorf("--source-ip %q is not an IP address", o.sourceIP)
		}
		if o.proto == "tcp" {
			local = &net.TCPAddr{IP: ip, Port: o.sourcePort}
		} else {
			local = &net.UDPAddr{IP: ip, Port: o.sourcePort}
		}
	}
	out := json.NewEncoder(os.Stdout)
	var udpConn net.Conn // shared socket when the UDP source port is fixed
	defer func() {
		if udpConn != nil {
			_ = udpConn.Close()
		}
	}()
	for i := 0; i < o.count; i++ {
		if i > 0 && o.interval > 0 {
			time.Sleep(o.interval)
		}
		var r Reply
		start := time.Now()
		switch {
		case o.proto == "tcp":
			r = tcpRequest(o, local)
		case o.proto == "sctp":
			r = sctpRequest(o)
		case o.sourcePort != 0:
			if udpConn == nil {
				c, err := dial("udp", o.target, local, o.timeout)
				if err != nil {
					r = Reply{Error: classify(err)}
					break
				}
				udpConn = c
			}
			r = udpExchange(udpConn, o.timeout)
		default:
			c, err := dial("udp", o.target, local, o.timeout)
			if err != nil {
				r = Reply{Error: classify(err)}
				break
			}
			r = udpExchange(c, o.timeout)
			_ = c.Close()
		}
		r.Ms = float64(time.Since(start).Microseconds()) / 1000
		if err := out.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

func dial(network, target string, local net.Addr, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, LocalAddr: local}
	return d.Dial(network, target)
}

func tcpRequest(o clientOpts, local net.Addr) Reply {
	c, err := dial("tcp", o.target, local, o.timeout)
	if err != nil {
		return Reply{Error: classify(err)}
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(o.timeout))
	return readAnswer(c)
}

// udpExchange sends one datagram on a connected socket and waits for the answer; a
// connected socket is what makes an ICMP port unreachable show up as ECONNREFUSED.
func udpExchange(c net.Conn, timeout time.Duration) Reply {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("hello\n")); err != nil {
		return Reply{Error: classify(err)}
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return Reply{Error: classify(err)}
	}
	return parseAnswer(string(buf[:n]))
}

func readAnswer(c net.Conn) Reply {
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return Reply{Error: classify(err)}
	}
	return parseAnswer(line)
}

func parseAnswer(line string) Reply {
	name, seen, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok {
		return Reply{Error: fmt.Sprintf("other: malformed answer %q", line)}
	}
	return Reply{Backend: name, Seen: seen}
}

// classify names the failure the way the tests need: "refused" is what a REJECT rule
// (TCP RST or ICMP port unreachable) produces, "timeout" what a DROP produces, and
// "unreachable" an ICMP host/net unreachable (no route).
func classify(err error) string {
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
