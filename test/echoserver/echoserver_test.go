package main

import (
	"io"
	"log"
	"net"
	"testing"
	"time"
)

var quiet = log.New(io.Discard, "", 0)

func TestTCPAnswerNamesBackendAndSource(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	go serveTCP(l, "pod-x", quiet)
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0}
	r := tcpRequest(clientOpts{target: l.Addr().String(), timeout: time.Second}, local)
	if r.Error != "" || r.Backend != "pod-x" {
		t.Fatalf("got %+v, want an answer from pod-x", r)
	}
	host, _, _ := net.SplitHostPort(r.Seen)
	if host != "127.0.0.1" {
		t.Errorf("seen %q, want 127.0.0.1:port", r.Seen)
	}
}

func TestUDPFixedSourcePortIsSeen(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.Close() }()
	go serveUDP(pc, "pod-u", quiet)
	// Pick a free port for the client, then reuse it for two exchanges on one socket.
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.LocalAddr().(*net.UDPAddr).Port
	_ = probe.Close()
	c, err := dial("udp", pc.LocalAddr().String(), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	for i := 0; i < 2; i++ {
		r := udpExchange(c, time.Second)
		if r.Backend != "pod-u" || r.Seen != c.LocalAddr().String() {
			t.Fatalf("exchange %d: got %+v, want pod-u seeing %s", i, r, c.LocalAddr())
		}
	}
}

func TestClosedPortsAreRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	if r := tcpRequest(clientOpts{target: addr, timeout: time.Second}, nil); r.Error != "refused" {
		t.Errorf("TCP to closed %s: got %+v, want refused", addr, r)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	uaddr := pc.LocalAddr().String()
	_ = pc.Close()
	c, err := dial("udp", uaddr, nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if r := udpExchange(c, time.Second); r.Error != "refused" {
		t.Errorf("UDP to closed %s: got %+v, want refused (ICMP port unreachable)", uaddr, r)
	}
}

func TestSilentPeerTimesOut(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // bound but never answers
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.Close() }()
	c, err := dial("udp", pc.LocalAddr().String(), nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if r := udpExchange(c, 200*time.Millisecond); r.Error != "timeout" {
		t.Errorf("got %+v, want timeout", r)
	}
}

func TestParsePorts(t *testing.T) {
	got, err := parsePorts("80, 8080,")
	if err != nil || len(got) != 2 || got[0] != 80 || got[1] != 8080 {
		t.Errorf("parsePorts: %v %v", got, err)
	}
	if _, err := parsePorts("80,http"); err == nil {
		t.Error("parsePorts accepted a name")
	}
	if _, err := parsePorts("70000"); err == nil {
		t.Error("parsePorts accepted 70000")
	}
}
