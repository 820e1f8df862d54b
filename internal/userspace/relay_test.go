package userspace

import (
	"bufio"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kproxy/kproxy/internal/model"
)

// tcpBackend is an endpoint on loopback that greets each connection with its name and
// then echoes lines back.
func tcpBackend(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				if _, err := c.Write([]byte(name + "\n")); err != nil {
					return
				}
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(name + ":" + line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// udpBackend answers each datagram with its name and the payload.
func udpBackend(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if _, err := c.WriteToUDPAddrPort([]byte(name+":"+string(buf[:n])), from); err != nil {
				return
			}
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func testEnv() *relayEnv {
	return &relayEnv{family: model.IPv4, dialTimeout: time.Second, dialAttempts: 3, udpIdle: 300 * time.Millisecond, maxUDPFlows: 2, clock: clock.RealClock{}}
}

var svcName = model.ServicePortName{Port: "p", Protocol: v1.ProtocolTCP}

func dialGreeting(t *testing.T, addr string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp4", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("no greeting through the relay at %s: %v", addr, err)
	}
	return c, r, strings.TrimSpace(line)
}

func TestTCPRelayRoundRobinAndEndpointChange(t *testing.T) {
	a, b, c := tcpBackend(t, "a"), tcpBackend(t, "b"), tcpBackend(t, "c")
	bal := newBalancer(clock.RealClock{})
	bal.update([]netip.AddrPort{a, b}, nil, 0)
	key := listenerKey{proto: v1.ProtocolTCP, addr: netip.MustParseAddrPort("127.0.0.1:0")}
	l, err := startTCP(klog.Background(), key, testEnv(), &route{spec: listenerSpec{service: svcName}, bal: bal})
	if err != nil {
		t.Fatal(err)
	}
	defer l.stop()
	addr := l.ln.Addr().String()

	seen := map[string]int{}
	for range 4 {
		conn, _, name := dialGreeting(t, addr)
		_ = conn.Close()
		seen[name]++
	}
	if seen["a"] != 2 || seen["b"] != 2 {
		t.Errorf("4 connections over a and b went %v, want 2 each", seen)
	}

	// An open connection to the endpoint about to leave keeps working afterwards.
	var old net.Conn
	var oldR *bufio.Reader
	for {
		conn, r, name := dialGreeting(t, addr)
		if name == "a" {
			old, oldR = conn, r
			break
		}
		_ = conn.Close()
	}
	defer func() { _ = old.Close() }()
	bal.update([]netip.AddrPort{c}, nil, 0)
	l.pruneFlows()
	for range 3 {
		conn, _, name := dialGreeting(t, addr)
		_ = conn.Close()
		if name != "c" {
			t.Errorf("new connection after the change went to %s, want c", name)
		}
	}
	if _, err := old.Write([]byte("still there\n")); err != nil {
		t.Fatalf("writing to the existing connection after the endpoint change: %v", err)
	}
	if line, err := oldR.ReadString('\n'); err != nil || line != "a:still there\n" {
		t.Errorf("existing connection after the endpoint change: %q, %v", line, err)
	}
}

func TestTCPRelayTriesNextEndpointAndResetsWhenNoneAnswers(t *testing.T) {
	good := tcpBackend(t, "good")
	// A port nothing listens on: dials are refused.
	probe, _ := net.Listen("tcp4", "127.0.0.1:0")
	dead := probe.Addr().(*net.TCPAddr).AddrPort()
	_ = probe.Close()
	bal := newBalancer(clock.RealClock{})
	bal.update([]netip.AddrPort{dead, good}, nil, 0)
	key := listenerKey{proto: v1.ProtocolTCP, addr: netip.MustParseAddrPort("127.0.0.1:0")}
	l, err := startTCP(klog.Background(), key, testEnv(), &route{spec: listenerSpec{service: svcName}, bal: bal})
	if err != nil {
		t.Fatal(err)
	}
	defer l.stop()
	for range 3 {
		conn, _, name := dialGreeting(t, l.ln.Addr().String())
		_ = conn.Close()
		if name != "good" {
			t.Errorf("got %s, want good (the dead endpoint skipped)", name)
		}
	}
	bal.update([]netip.AddrPort{dead}, nil, 0)
	// The reset can beat the client's own view of the handshake: either the dial or
	// the first read must report it.
	conn, err := net.Dial("tcp4", l.ln.Addr().String())
	if err == nil {
		defer func() { _ = conn.Close() }()
		if err := conn.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
			t.Fatal(err)
		}
		_, err = conn.Read(make([]byte, 1))
	}
	if err == nil || !strings.Contains(err.Error(), "reset") {
		t.Errorf("with only a dead endpoint: got %v, want a connection reset", err)
	}
}

func udpExchange(t *testing.T, c *net.UDPConn, msg string) string {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no UDP answer to %q: %v", msg, err)
	}
	return string(buf[:n])
}

func TestUDPFlowsStickIdleOutAndFollowEndpointChanges(t *testing.T) {
	a, b := udpBackend(t, "a"), udpBackend(t, "b")
	bal := newBalancer(clock.RealClock{})
	bal.update([]netip.AddrPort{a, b}, nil, 0)
	key := listenerKey{proto: v1.ProtocolUDP, addr: netip.MustParseAddrPort("127.0.0.1:0")}
	env := testEnv()
	l, err := startUDP(klog.Background(), key, env, &route{spec: listenerSpec{service: svcName}, bal: bal})
	if err != nil {
		t.Fatal(err)
	}
	defer l.stop()
	target := l.conn.LocalAddr().(*net.UDPAddr)

	client, err := net.DialUDP("udp4", nil, target)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	first := udpExchange(t, client, "1")
	backend := strings.Split(first, ":")[0]
	// One flow: every datagram from the same client port reaches the same endpoint.
	for i := range 5 {
		if got := udpExchange(t, client, "x"); got != backend+":x" {
			t.Fatalf("datagram %d of the flow went to %q, want %s", i, got, backend)
		}
	}
	if n := l.flowCount(); n != 1 {
		t.Errorf("flows = %d, want 1", n)
	}
	// Idle for longer than udpIdle: the flow is gone.
	deadline := time.Now().Add(2 * time.Second)
	for l.flowCount() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := l.flowCount(); n != 0 {
		t.Errorf("flows = %d after %v idle, want 0", n, env.udpIdle)
	}

	// The flow's endpoint leaves: the next datagram goes to the remaining one.
	udpExchange(t, client, "again")
	gone, stay := a, b
	if strings.HasPrefix(udpExchange(t, client, "which"), "b:") {
		gone, stay = b, a
	}
	bal.update([]netip.AddrPort{stay}, nil, 0)
	l.pruneFlows()
	stayName := "a"
	if stay == b {
		stayName = "b"
	}
	if got := udpExchange(t, client, "moved"); got != stayName+":moved" {
		t.Errorf("after %s left: got %q, want %s:moved", gone, got, stayName)
	}

	// The table holds maxUDPFlows (2) flows; a third client is dropped.
	var clients []*net.UDPConn
	for range 2 {
		c, err := net.DialUDP("udp4", nil, target)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		clients = append(clients, c)
	}
	udpExchange(t, clients[0], "second")
	if _, err := clients[1].Write([]byte("third")); err != nil {
		t.Fatal(err)
	}
	if err := clients[1].SetReadDeadline(time.Now().Add(150 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := clients[1].Read(make([]byte, 100)); err == nil {
		t.Errorf("a third flow was relayed past the table limit of %d", env.maxUDPFlows)
	}
}
