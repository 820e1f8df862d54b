package portreserve

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/model"
)

// freePort finds a port that is free for both TCP and UDP right now.
func freePort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if u, err := net.ListenPacket("udp", ":"+strconv.Itoa(port)); err == nil {
			_ = u.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return 0
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReserveConflictRetryRelease(t *testing.T) {
	port := freePort(t)
	tcp := Port{"TCP", port}
	udp := Port{"UDP", port}
	// Another process got the TCP port first (on one address: that is enough).
	other, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	var failures atomic.Int32
	var lastHeld atomic.Int32
	var conflicts []string // only Sync and the retry timer call hooks, under r's lock
	r := New(50*time.Millisecond, Hooks{
		Failure: func(p Port) {
			if p != tcp {
				t.Errorf("failure counted for %s, want only %s", p, tcp)
			}
			failures.Add(1)
		},
		Held: func(held []Port) { lastHeld.Store(int32(len(held))) },
		Conflict: func(p Port, services []string, err error) {
			conflicts = append(conflicts, fmt.Sprintf("%s %v %v", p, services, errors.Is(err, syscall.EADDRINUSE)))
		},
	})
	defer r.Close()

	r.Sync(Want{tcp: {"default/web:http"}, udp: {"default/dns:dns"}})
	if got := r.Failed(); len(got) != 1 || got[0] != tcp {
		t.Fatalf("Failed() = %v, want [%s]", got, tcp)
	}
	if got := r.Held(); len(got) != 1 || got[0] != udp {
		t.Fatalf("Held() = %v, want [%s]", got, udp)
	}
	if failures.Load() < 1 {
		t.Error("the conflict was not counted")
	}
	// The UDP port is held: nobody else can bind it.
	if c, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
		_ = c.Close()
		t.Error("bound the reserved UDP port")
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("binding the reserved UDP port: %v, want EADDRINUSE", err)
	}

	// A sync while the port is still taken reports no second conflict.
	r.Sync(Want{tcp: {"default/web:http"}, udp: {"default/dns:dns"}})
	if want := fmt.Sprintf("TCP/%d [default/web:http] true", port); len(conflicts) != 1 || conflicts[0] != want {
		t.Errorf("Conflict hook calls %q, want exactly [%q]", conflicts, want)
	}

	// The other process lets go: the retry (no sync needed) takes the port.
	_ = other.Close()
	waitFor(t, "the retry to reserve "+tcp.String(), func() bool { return len(r.Held()) == 2 })
	if lastHeld.Load() != 2 {
		t.Errorf("the Held hook last reported %d ports, want 2", lastHeld.Load())
	}
	if len(r.Failed()) != 0 {
		t.Errorf("Failed() = %v after the retry", r.Failed())
	}
	if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
		_ = l.Close()
		t.Error("bound the reserved TCP port")
	}
	// A connection that reaches the socket is accepted and closed, not left hanging.
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		t.Fatalf("dial the reserved port: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("read data from the reserving socket")
	} else if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		t.Error("the reserving socket left the connection open")
	}
	_ = c.Close()

	// No longer wanted: released.
	r.Sync(Want{})
	if len(r.Held()) != 0 {
		t.Fatalf("Held() = %v after an empty sync", r.Held())
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("port not released: %v", err)
	}
	_ = l.Close()
}

func TestFromSnapshot(t *testing.T) {
	web := model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "web"}, Port: "http", Protocol: "TCP"}
	dns := model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "dns"}, Port: "dns", Protocol: "UDP"}
	other := model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "other"}, Port: "", Protocol: "TCP"}
	sctp := model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "sctp"}, Port: "", Protocol: "SCTP"}
	cip := model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "cip"}, Port: "", Protocol: "TCP"}
	snap := &model.Snapshot{Services: map[model.ServicePortName]*model.ServicePort{
		web:   {Name: web, Protocol: "TCP", NodePort: 30080},
		dns:   {Name: dns, Protocol: "UDP", NodePort: 30080},
		other: {Name: other, Protocol: "TCP", NodePort: 30080},
		sctp:  {Name: sctp, Protocol: "SCTP", NodePort: 30090},
		cip:   {Name: cip, Protocol: "TCP"},
	}}
	w := FromSnapshot(snap)
	if len(w) != 2 {
		t.Fatalf("FromSnapshot = %v, want TCP/30080 and UDP/30080 only", w)
	}
	if got := w[Port{"TCP", 30080}]; len(got) != 2 || got[0] != "ns/other" || got[1] != "ns/web:http" {
		t.Errorf("TCP/30080 wanted by %v", got)
	}
	if got := w[Port{"UDP", 30080}]; len(got) != 1 || got[0] != "ns/dns:dns" {
		t.Errorf("UDP/30080 wanted by %v", got)
	}
}
