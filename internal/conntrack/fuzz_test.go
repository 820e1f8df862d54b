package conntrack

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/kproxy/kproxy/internal/model"
)

// FuzzParseFlow feeds the ctnetlink decoder arbitrary messages, as a kernel of
// another version or a corrupted dump could send: it returns a flow or an error,
// never panics, and the matcher the cleaner runs on every decoded flow does not
// panic on whatever addresses and ports came out (short or oversized IPs included).
func FuzzParseFlow(f *testing.F) {
	f.Add(message(unix.AF_INET,
		tupleAttr(nl.CTA_TUPLE_ORIG, unix.IPPROTO_UDP, net.ParseIP("10.0.0.1"), net.ParseIP("10.96.0.10"), 40000, 53),
		tupleAttr(nl.CTA_TUPLE_REPLY, unix.IPPROTO_UDP, net.ParseIP("10.244.1.5"), net.ParseIP("10.0.0.1"), 5353, 40000)))
	f.Add(message(unix.AF_INET6,
		tupleAttr(nl.CTA_TUPLE_ORIG, unix.IPPROTO_SCTP, net.ParseIP("fd00::1"), net.ParseIP("fd00:96::10"), 3868, 3868)))
	f.Add([]byte{2, 0, 0, 0, 4, 0, 1, 0})
	f.Add([]byte{})
	targets := []Target{
		{Protocol: unix.IPPROTO_UDP, ServiceIPs: addrs("10.96.0.10", "fd00:96::10"), Port: 53, NodePort: 30053, Keep: keep("10.244.1.5:5353")},
		{Protocol: unix.IPPROTO_TCP, UnNATedOnly: true, ServiceIPs: addrs("10.96.0.10"), Port: 80},
	}
	m4, err := newFlowMatcher(model.IPv4, targets)
	if err != nil {
		f.Fatal(err)
	}
	m6, err := newFlowMatcher(model.IPv6, targets)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		flow, err := parseFlow(msg)
		if err != nil {
			return
		}
		if flow == nil {
			t.Fatal("parseFlow returned neither a flow nor an error")
		}
		m4.MatchConntrackFlow(flow)
		m6.MatchConntrackFlow(flow)
	})
}
