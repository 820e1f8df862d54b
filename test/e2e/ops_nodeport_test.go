package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// tryBindInNode1 runs an echoserver in node1 that tries to listen on port and returns its
// output: "address already in use" when kproxy (or anyone) holds the port. An
// echoserver that did bind is stopped after a moment by timeout(1).
func tryBindInNode1(e *env, proto string, port int) string {
	out, _ := e.c.Exec(cluster.KproxyNode, "timeout", "0.3", echoBin, "serve", "--name", "intruder", "--"+proto, fmt.Sprint(port))
	return out
}

func testNodePortReservation(t *testing.T, e *env) {
	e.dumpOnFailure(t, "squat")
	const squatted, free = 30081, 30082
	// Another program has the TCP port before the Service exists.
	squatter, err := e.c.StartProcess(cluster.KproxyNode, "squatter", echoBin, "serve", "--name", "squatter", "--tcp", fmt.Sprint(squatted))
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Kill()
	if err := e.c.WaitFor(func() error {
		if !strings.Contains(squatter.Logs(), "ready ") {
			return errorf("squatter not ready: %s", squatter.Logs())
		}
		return nil
	}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	failuresBefore, _ := scrapeMetrics(t, e.c).get("kproxy_nodeport_reservation_failures_total", "protocol", "TCP")

	svc := cluster.Service{Namespace: ns, Name: "squat", Type: "NodePort", ClusterIP: "10.96.0.60", Ports: []cluster.ServicePort{
		{Name: "http", Port: 80, NodePort: squatted},
		{Name: "dns", Protocol: "UDP", Port: 53, NodePort: free},
	}}
	e.apply(t, svc, "pod-b1", "pod-b2")
	target := hostPort(cluster.Node1IP, squatted)
	e.waitAnswer(t, "ext", "tcp", target, 5*time.Second)

	// kproxy names the conflict: the error, the port and the Service.
	err = e.c.WaitFor(func() error {
		for _, line := range strings.Split(e.proxy.Logs(), "\n") {
			if strings.Contains(line, "bind: address already in use") && strings.Contains(line, fmt.Sprintf("TCP/%d", squatted)) &&
				strings.Contains(line, "e2e/squat:http") {
				t.Logf("kproxy logged: %s", line)
				return nil
			}
		}
		return errorf("no log line with \"bind: address already in use\", TCP/%d and e2e/squat:http", squatted)
	}, 5*time.Second)
	if err != nil {
		t.Error(err)
	}
	// The NodePort's rules work regardless: they DNAT before any socket sees the packet.
	replies := e.c.Request("ext", "tcp", target, 20)
	requireAll(t, "ext -> squatted NodePort", replies)
	requireBackends(t, "ext -> squatted NodePort", replies, "pod-b1", "pod-b2")
	m := scrapeMetrics(t, e.c)
	if v, _ := m.get("kproxy_nodeport_reservation_failures_total", "protocol", "TCP"); v <= failuresBefore {
		t.Errorf("kproxy_nodeport_reservation_failures_total{protocol=TCP}: %v then %v, want an increase", failuresBefore, v)
	}
	if v, _ := m.get("kproxy_nodeports_reserved", "protocol", "UDP"); v < 1 {
		t.Errorf("kproxy_nodeports_reserved{protocol=UDP} = %v, want the free NodePort held", v)
	}

	// The free NodePort is held: nobody else can bind it.
	if out := tryBindInNode1(e, "udp", free); !strings.Contains(out, "address already in use") {
		t.Errorf("a process bound UDP NodePort %d that kproxy should hold: %s", free, out)
	}
	// The squatter leaves: kproxy's retry (every sync period, no sync needed) takes the
	// port. (Probing with binds meanwhile would race with that retry.)
	squatter.Kill()
	start := time.Now()
	reserved := fmt.Sprintf("port=\"TCP/%d\"", squatted)
	err = e.c.WaitFor(func() error {
		for _, line := range strings.Split(e.proxy.Logs(), "\n") {
			if strings.Contains(line, "Reserved NodePort after an earlier conflict") && strings.Contains(line, reserved) {
				return nil
			}
		}
		return errorf("kproxy did not log that it reserved TCP/%d after the conflict", squatted)
	}, 3*opsSyncPeriod)
	if err != nil {
		t.Error(err)
	} else {
		t.Logf("kproxy reserved TCP/%d %v after the squatter left", squatted, time.Since(start).Round(10*time.Millisecond))
	}
	if out := tryBindInNode1(e, "tcp", squatted); !strings.Contains(out, "address already in use") {
		t.Errorf("TCP %d still bindable by others after kproxy reserved it: %s", squatted, out)
	}
	requireAll(t, "ext -> reserved NodePort", e.c.Request("ext", "tcp", target, 5))

	// The Service goes away: its ports are released.
	if err := e.c.RemoveManifest("svc-squat"); err != nil {
		t.Fatal(err)
	}
	err = e.c.WaitFor(func() error {
		if out := tryBindInNode1(e, "udp", free); !strings.Contains(out, "ready ") {
			return errorf("UDP %d not released after the Service was deleted: %s", free, out)
		}
		return nil
	}, 5*time.Second)
	if err != nil {
		t.Error(err)
	}
}
