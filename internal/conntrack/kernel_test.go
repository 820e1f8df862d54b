package conntrack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kproxy/kproxy/internal/model"
)

// These tests run against the real kernel inside a network namespace of their own:
// traffic goes to a dummy interface there and never leaves the machine.

const (
	serviceIP = "10.96.0.10"
	podIP     = "10.244.0.5" // the local "endpoint" address, on the veth interface
	oldPort   = 5353
	newPort   = 5354
	clientSrc = 40000
)

// testNetns creates a named network namespace with lo and a veth pair up,
// removed when the test ends, and returns its handle.
func testNetns(t *testing.T) (string, netns.NsHandle) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed", tool)
		}
	}
	name := fmt.Sprintf("kproxy-ct-%d-%d", os.Getpid(), time.Now().UnixNano()%1_000_000)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot create a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("deleting netns %s: %v: %s", name, err, out)
		}
	})
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("opening netns %s: %v", name, err)
	}
	t.Cleanup(func() { _ = ns.Close() })
	for _, args := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		// A veth pair with both ends here gives the pod address a real device
		// (the dummy driver is not always available).
		{"ip", "link", "add", "kp0", "type", "veth", "peer", "name", "kp1"},
		{"ip", "link", "set", "kp0", "up"},
		{"ip", "link", "set", "kp1", "up"},
		{"ip", "addr", "add", podIP + "/24", "dev", "kp0"},
		{"ip", "route", "add", "10.96.0.0/16", "dev", "kp0"},
	} {
		nsExec(t, name, args...)
	}
	return name, ns
}

func nsExec(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", name}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inNetns runs f on a thread switched into ns; sockets f opens stay in ns.
func inNetns(t *testing.T, ns netns.NsHandle, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = orig.Close() }()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(fmt.Sprintf("cannot return to the original netns: %v", err)) // the thread is unusable
		}
	}()
	f()
}

func listen(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// received reports whether c gets a datagram within d.
func received(c *net.UDPConn, d time.Duration) bool {
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		return false
	}
	buf := make([]byte, 64)
	_, _, err := c.ReadFromUDP(buf)
	return err == nil
}

func dnatTo(t *testing.T, name string, op string, port int) {
	t.Helper()
	args := []string{"iptables", "-t", "nat", op, "OUTPUT"}
	if op == "-R" {
		args = append(args, "1")
	}
	nsExec(t, name, append(args, "-p", "udp", "-d", serviceIP, "--dport", "53",
		"-j", "DNAT", "--to-destination", fmt.Sprintf("%s:%d", podIP, port))...)
}

// flowsTo lists the namespace's IPv4 conntrack entries of proto whose original
// destination is dst, using the netlink library's own listing as an independent
// check of what our cleaner did.
func flowsTo(t *testing.T, ns netns.NsHandle, proto uint8, dst string) []*netlink.ConntrackFlow {
	t.Helper()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	all, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatalf("listing conntrack: %v", err)
	}
	var out []*netlink.ConntrackFlow
	for _, f := range all {
		if f.Forward.Protocol == proto && f.Forward.DstIP.String() == dst {
			out = append(out, f)
		}
	}
	return out
}

func replySources(flows []*netlink.ConntrackFlow) []string {
	var out []string
	for _, f := range flows {
		out = append(out, fmt.Sprintf("%s:%d", f.Reverse.SrcIP, f.Reverse.SrcPort))
	}
	return out
}

func dnsTarget(keepPorts ...int) Target {
	k := map[netip.AddrPort]struct{}{}
	for _, p := range keepPorts {
		k[netip.AddrPortFrom(netip.MustParseAddr(podIP), uint16(p))] = struct{}{}
	}
	return Target{Protocol: unix.IPPROTO_UDP, ServiceIPs: []netip.Addr{netip.MustParseAddr(serviceIP)}, Port: 53, Keep: k}
}

func TestCleanerUDPAgainstKernel(t *testing.T) {
	name, ns := testNetns(t)
	dnatTo(t, name, "-A", oldPort)

	var oldEP, newEP, client, direct *net.UDPConn
	inNetns(t, ns, func() {
		oldEP = listen(t, fmt.Sprintf("%s:%d", podIP, oldPort))
		newEP = listen(t, fmt.Sprintf("%s:%d", podIP, newPort))
		client = listen(t, fmt.Sprintf("%s:%d", podIP, clientSrc))
		direct = listen(t, fmt.Sprintf("%s:%d", podIP, clientSrc+1))
	})
	svc := &net.UDPAddr{IP: net.ParseIP(serviceIP), Port: 53}
	send := func() {
		t.Helper()
		if _, err := client.WriteToUDP([]byte("q"), svc); err != nil {
			t.Fatalf("sending to %s: %v", svc, err)
		}
	}
	// An unrelated flow straight to the new endpoint must survive every Clean.
	if _, err := direct.WriteToUDP([]byte("d"), &net.UDPAddr{IP: net.ParseIP(podIP), Port: newPort}); err != nil {
		t.Fatal(err)
	}
	if !received(newEP, 2*time.Second) {
		t.Fatal("direct datagram not delivered")
	}

	send()
	if !received(oldEP, 2*time.Second) {
		t.Fatal("datagram to the service did not reach the endpoint behind the DNAT rule")
	}
	if _, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER); err != nil {
		t.Skipf("skipping: no ctnetlink: %v", err)
	}
	if got := replySources(flowsTo(t, ns, unix.IPPROTO_UDP, serviceIP)); len(got) != 1 || got[0] != fmt.Sprintf("%s:%d", podIP, oldPort) {
		t.Fatalf("conntrack entries to the service reply from %v, want just the old endpoint", got)
	}

	// The endpoint moves. The existing entry keeps the client on the old one: the
	// problem the cleaner exists for.
	dnatTo(t, name, "-R", newPort)
	send()
	if !received(oldEP, 2*time.Second) || received(newEP, 200*time.Millisecond) {
		t.Fatal("the conntrack entry did not keep the client on the old endpoint; the test cannot show the cleanup")
	}

	c := NewCleanerIn(ns)
	defer c.Close()

	// Keeping the old endpoint deletes nothing.
	if n, err := c.Clean(t.Context(), model.IPv4, []Target{dnsTarget(oldPort)}); err != nil || n != 0 {
		t.Fatalf("Clean keeping the endpoint in use = %d, %v; want 0, nil", n, err)
	}
	if len(flowsTo(t, ns, unix.IPPROTO_UDP, serviceIP)) != 1 {
		t.Fatal("entry to a kept endpoint was deleted")
	}
	// Cleaning the IPv6 table does not touch IPv4 entries.
	v6 := dnsTarget()
	v6.ServiceIPs = []netip.Addr{netip.MustParseAddr("fd00:96::10")}
	if n, err := c.Clean(t.Context(), model.IPv6, []Target{v6}); err != nil || n != 0 {
		t.Fatalf("IPv6 Clean = %d, %v; want 0, nil", n, err)
	}

	// The sync now serves only the new endpoint: the stale entry goes.
	if n, err := c.Clean(t.Context(), model.IPv4, []Target{dnsTarget(newPort)}); err != nil || n != 1 {
		t.Fatalf("Clean keeping only the new endpoint = %d, %v; want 1, nil", n, err)
	}
	if got := flowsTo(t, ns, unix.IPPROTO_UDP, serviceIP); len(got) != 0 {
		t.Fatalf("stale entries remain, replying from %v", replySources(got))
	}
	send()
	if !received(newEP, 2*time.Second) {
		t.Fatal("after the cleanup the client still does not reach the new endpoint")
	}
	if got := replySources(flowsTo(t, ns, unix.IPPROTO_UDP, serviceIP)); len(got) != 1 || got[0] != fmt.Sprintf("%s:%d", podIP, newPort) {
		t.Fatalf("new entry replies from %v, want the new endpoint", got)
	}

	// The production constructor works in the namespace of the calling thread.
	inNetns(t, ns, func() {
		prod := NewCleaner()
		defer prod.Close()
		if n, err := prod.Clean(t.Context(), model.IPv4, []Target{dnsTarget()}); err != nil || n != 1 {
			t.Errorf("Clean keeping nothing = %d, %v; want 1, nil", n, err)
		}
	})
	if got := flowsTo(t, ns, unix.IPPROTO_UDP, serviceIP); len(got) != 0 {
		t.Fatalf("Clean keeping nothing left entries replying from %v", replySources(got))
	}
	if len(flowsTo(t, ns, unix.IPPROTO_UDP, podIP)) != 1 {
		t.Fatal("the unrelated direct flow was deleted")
	}
}

// TestCleanerSCTPAgainstKernel uses entries created over ctnetlink, since SCTP
// traffic needs the sctp module; it proves SCTP ports are read correctly.
func TestCleanerSCTPAgainstKernel(t *testing.T) {
	name, ns := testNetns(t)
	// Any nat rule makes the namespace track connections.
	dnatTo(t, name, "-A", oldPort)
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		t.Skipf("skipping: no ctnetlink: %v", err)
	}
	defer h.Close()

	const svc = "10.96.0.30"
	create := func(svcPort uint16, endpoint string) {
		t.Helper()
		ep := netip.MustParseAddrPort(endpoint)
		f := &netlink.ConntrackFlow{
			FamilyType: unix.AF_INET,
			Forward: netlink.IPTuple{Protocol: unix.IPPROTO_SCTP, SrcIP: net.ParseIP(podIP).To4(), SrcPort: clientSrc,
				DstIP: net.ParseIP(svc).To4(), DstPort: svcPort},
			Reverse: netlink.IPTuple{Protocol: unix.IPPROTO_SCTP, SrcIP: net.IP(ep.Addr().AsSlice()), SrcPort: ep.Port(),
				DstIP: net.ParseIP(podIP).To4(), DstPort: clientSrc},
			TimeOut: 300,
		}
		if err := h.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
				t.Skipf("skipping: kernel cannot create SCTP conntrack entries: %v", err)
			}
			t.Fatalf("creating SCTP entry to %s:%d: %v", svc, svcPort, err)
		}
	}
	create(3868, "10.244.0.6:3868") // the service port under test
	create(3869, "10.244.0.7:3869") // another port of the same IP: not a target
	if got := replySources(flowsTo(t, ns, unix.IPPROTO_SCTP, svc)); len(got) != 2 {
		t.Fatalf("created SCTP entries reply from %v, want 2 entries", got)
	}

	c := NewCleanerIn(ns)
	defer c.Close()
	target := Target{Protocol: unix.IPPROTO_SCTP, ServiceIPs: []netip.Addr{netip.MustParseAddr(svc)}, Port: 3868,
		Keep: map[netip.AddrPort]struct{}{netip.MustParseAddrPort("10.244.0.6:3868"): {}}}
	if n, err := c.Clean(t.Context(), model.IPv4, []Target{target}); err != nil || n != 0 {
		t.Fatalf("Clean keeping the SCTP endpoint = %d, %v; want 0, nil", n, err)
	}
	target.Keep = nil
	if n, err := c.Clean(t.Context(), model.IPv4, []Target{target}); err != nil || n != 1 {
		t.Fatalf("Clean keeping nothing = %d, %v; want 1, nil", n, err)
	}
	got := flowsTo(t, ns, unix.IPPROTO_SCTP, svc)
	if len(got) != 1 || !got[0].Reverse.SrcIP.Equal(net.ParseIP("10.244.0.7")) {
		t.Fatalf("after cleaning port 3868, entries reply from %v; want only the port 3869 one (10.244.0.7)", replySources(got))
	}
}

func TestSetSysctlsInNetns(t *testing.T) {
	name, ns := testNetns(t)
	dnatTo(t, name, "-A", oldPort) // loads conntrack in the namespace
	sys := t.TempDir()             // never touch the host's global hashsize
	inNetns(t, ns, func() {
		if _, err := os.Stat("/proc/sys/net/netfilter/nf_conntrack_udp_timeout"); err != nil {
			t.Skipf("skipping: no per-namespace conntrack sysctls: %v", err)
		}
		// nf_conntrack_max is read-only outside the initial namespace: skipped.
		err := SetSysctlsAt(Roots{ProcSys: "/proc/sys", Sys: sys},
			Sysctls{MaxPerCore: 1 << 20, UDPTimeout: 37 * time.Second})
		if err != nil {
			t.Fatalf("SetSysctls in a namespace: %v", err)
		}
		b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_udp_timeout")
		if err != nil || strings.TrimSpace(string(b)) != "37" {
			t.Errorf("namespace udp_timeout = %q, %v; want 37", b, err)
		}
	})
}
