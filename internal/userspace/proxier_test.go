package userspace

import (
	"context"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/model"
)

// inNewNetns runs the test body on a thread moved into a fresh network namespace, so
// it can create interfaces and addresses without touching the machine's.
func inNewNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		runtime.UnlockOSThread()
		t.Skipf("cannot create a network namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it is in the wrong namespace, and Go ends a
			// locked thread with its goroutine.
			t.Errorf("back to the original network namespace: %v", err)
			return
		}
		_ = ns.Close()
		_ = orig.Close()
		runtime.UnlockOSThread()
	})
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
}

func TestProxierHoldsAddressesRestoresThemAndCleansUp(t *testing.T) {
	// The backend lives on the host's loopback: only the locked test thread is in the
	// new namespace, and the relay dials from other threads, which are not.
	backend := tcpBackend(t, "pod")
	inNewNetns(t)
	name := model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "web"}, Port: "http", Protocol: v1.ProtocolTCP}
	sp := &model.ServicePort{Name: name, ClusterIPs: addrs("10.96.0.10"), Port: 80, Protocol: v1.ProtocolTCP}
	snap := &model.Snapshot{
		Services:  map[model.ServicePortName]*model.ServicePort{name: sp},
		Endpoints: map[model.ServicePortName][]*model.Endpoint{name: {{IP: backend.Addr(), Port: int32(backend.Port()), Ready: true, Serving: true}}},
	}
	p := NewProxier(Params{Family: model.IPv4, Interface: "kptest0"})
	defer p.Stop()
	if err := p.Sync(t.Context(), snap, true); err != nil {
		t.Fatalf("sync: %v", err)
	}
	conn, _, greeting := dialGreeting(t, "10.96.0.10:80")
	_ = conn.Close()
	if greeting != "pod" {
		t.Errorf("through the ClusterIP: %q, want pod", greeting)
	}
	if p.Flushed(t.Context()) {
		t.Errorf("Flushed right after a sync")
	}

	// Someone removes the address: Flushed says so, and the next sync restores it.
	link, err := netlink.LinkByName("kptest0")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrDel(link, hostAddr(netip.MustParseAddr("10.96.0.10"))); err != nil {
		t.Fatal(err)
	}
	if !p.Flushed(t.Context()) {
		t.Errorf("Flushed = false with the ClusterIP removed")
	}
	if err := p.Sync(t.Context(), snap, true); err != nil {
		t.Fatalf("sync: %v", err)
	}
	conn, _, _ = dialGreeting(t, "10.96.0.10:80")
	_ = conn.Close()

	// No endpoints: the address stays and the port is refused.
	snap.Endpoints[name] = nil
	if err := p.Sync(t.Context(), snap, false); err != nil {
		t.Fatalf("sync: %v", err)
	}
	if c, err := net.Dial("tcp4", "10.96.0.10:80"); err == nil {
		_ = c.Close()
		t.Errorf("a Service without endpoints accepted a connection")
	}
	if have, _ := p.addrs.held(link); len(have) != 1 {
		t.Errorf("held addresses %v, want the ClusterIP kept", have)
	}

	// The Service goes: so does its address.
	delete(snap.Services, name)
	if err := p.Sync(t.Context(), snap, false); err != nil {
		t.Fatalf("sync: %v", err)
	}
	if have, _ := p.addrs.held(link); len(have) != 0 {
		t.Errorf("held addresses %v after the Service was removed, want none", have)
	}

	if err := Cleanup("kptest0"); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	if _, err := netlink.LinkByName("kptest0"); err == nil {
		t.Errorf("kptest0 still exists after Cleanup")
	}
	if err := Cleanup("kptest0"); err != nil {
		t.Errorf("second cleanup: %v", err)
	}
}

// The listeners and relays a sync starts live until the context of RunBackground (the
// proxy loop's) ends: then they are closed, and RunBackground returns only after
// every relay goroutine has.
func TestListenersEndWithTheLoopContext(t *testing.T) {
	backend := tcpBackend(t, "pod")
	inNewNetns(t)
	name := model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "web"}, Port: "http", Protocol: v1.ProtocolTCP}
	sp := &model.ServicePort{Name: name, ClusterIPs: addrs("10.96.0.10"), Port: 80, Protocol: v1.ProtocolTCP}
	snap := &model.Snapshot{
		Services:  map[model.ServicePortName]*model.ServicePort{name: sp},
		Endpoints: map[model.ServicePortName][]*model.Endpoint{name: {{IP: backend.Addr(), Port: int32(backend.Port()), Ready: true, Serving: true}}},
	}
	p := NewProxier(Params{Family: model.IPv4, Interface: "kptest0"})
	t.Cleanup(func() { _ = Cleanup("kptest0") })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		p.RunBackground(ctx)
		close(done)
	}()
	if err := p.Sync(ctx, snap, true); err != nil {
		t.Fatalf("sync: %v", err)
	}
	conn, _, greeting := dialGreeting(t, "10.96.0.10:80") // a relayed connection stays open
	defer func() { _ = conn.Close() }()
	if greeting != "pod" {
		t.Fatalf("through the ClusterIP: %q, want pod", greeting)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("RunBackground did not return after its context ended")
	}
	if c, err := net.Dial("tcp4", "10.96.0.10:80"); err == nil {
		_ = c.Close()
		t.Error("the listener still accepts after the loop's context ended")
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("the relayed connection is still open after the loop's context ended")
	}
}
