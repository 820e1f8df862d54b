package main

import (
	"net"
	"os"
	"testing"
	"time"
)

func TestSCTPPacketRoundTrip(t *testing.T) {
	pkt := sctpPacket(1234, 80, 0, sctpInit, initBody(0xabcdef01, 7, nil))
	p, ok := parseSCTP(pkt)
	if !ok || p.sport != 1234 || p.dport != 80 || p.chunk != sctpInit || p.initTag != 0xabcdef01 {
		t.Fatalf("parsed %+v (ok %v), want INIT 1234->80 with tag 0xabcdef01", p, ok)
	}
	if len(pkt)%4 != 0 {
		t.Errorf("packet length %d is not padded to 4", len(pkt))
	}
}

// An INIT/INIT-ACK exchange over loopback raw sockets (root only).
func TestSCTPEchoOverLoopback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("raw sockets need root")
	}
	if err := startSCTP([]int{9911}, "pod-s", quiet); err != nil {
		t.Skipf("no raw SCTP sockets here: %v", err)
	}
	for _, target := range []string{"127.0.0.1:9911", "[::1]:9911"} {
		r := sctpRequest(clientOpts{target: target, timeout: time.Second, sourcePort: 40911})
		host, _, _ := net.SplitHostPort(r.Seen)
		if r.Backend != "pod-s" || (host != "127.0.0.1" && host != "::1") {
			t.Errorf("SCTP to %s: got %+v, want pod-s seeing the loopback address", target, r)
		}
	}
	if r := sctpRequest(clientOpts{target: "127.0.0.1:9912", timeout: 200 * time.Millisecond}); r.Error != "timeout" {
		t.Errorf("SCTP to a port nobody serves: got %+v, want timeout", r)
	}
}
