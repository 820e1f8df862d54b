package nfacct

import (
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestEnsureAndGet: in a network namespace of its own, an object is created at zero,
// a second Ensure keeps it, and an iptables rule that matches it counts the packets
// it sees (three UDP datagrams to a local port through OUTPUT).
func TestEnsureAndGet(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and netfilter")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		_ = ns.Close()
	}()
	if err := Ensure("kproxy_test_pkts"); err != nil {
		t.Fatal(err)
	}
	if c, err := Get("kproxy_test_pkts"); err != nil || c != (Counter{}) {
		t.Fatalf("new object: %+v %v, want zero", c, err)
	}
	// Commands and sockets started from this locked thread are in its namespace.
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	server, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = server.Close() }()
	port := strconv.Itoa(server.LocalAddr().(*net.UDPAddr).Port)
	rule := []string{"-w", "5", "-A", "OUTPUT", "-p", "udp", "-d", "127.0.0.1", "--dport", port, "-m", "nfacct", "--nfacct-name", "kproxy_test_pkts"}
	if out, err := exec.Command("iptables", rule...).CombinedOutput(); err != nil {
		t.Fatalf("iptables %v: %v: %s", rule, err, out)
	}
	client, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	for range 3 {
		if _, err := client.WriteTo([]byte("x"), server.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	if err := Ensure("kproxy_test_pkts"); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	c, err := Get("kproxy_test_pkts")
	if err != nil {
		t.Fatal(err)
	}
	if c.Packets != 3 || c.Bytes == 0 {
		t.Errorf("after three datagrams and a second Ensure: %+v, want 3 packets kept", c)
	}
	if _, err := Get("kproxy_no_such_object"); err == nil {
		t.Error("Get of a missing object succeeded")
	}
}

// FuzzDecode: the nfacct answer decoder returns counts or an error for any input,
// never panics, and only returns counts when both attributes were there.
func FuzzDecode(f *testing.F) {
	pkts := nl.NewRtAttr(attrPkts, binary.BigEndian.AppendUint64(nil, 7))
	byts := nl.NewRtAttr(attrBytes, binary.BigEndian.AppendUint64(nil, 700))
	f.Add(append([]byte{unix.AF_UNSPEC, nl.NFNETLINK_V0, 0, 0}, append(pkts.Serialize(), byts.Serialize()...)...))
	f.Add(append([]byte{unix.AF_UNSPEC, nl.NFNETLINK_V0, 0, 0}, pkts.Serialize()...))
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		if _, err := decode(msg); err == nil && len(msg) < nl.SizeofNfgenmsg+2*12 {
			t.Fatalf("decoded counts from a %d-byte message, too short to hold both", len(msg))
		}
	})
}
