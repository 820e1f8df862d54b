package e2e

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

var (
	node1Pods = []string{"pod-a1", "pod-a2"}
	node2Pods = []string{"pod-b1", "pod-b2"}
)

// testETPLocal: reference group D and L. External traffic to a NodePort, LB IP or
// externalIP reaches only node1's endpoints with the client's address intact; a pod's
// traffic to the same addresses is short-circuited to every endpoint; with no local
// endpoint external traffic is dropped; the health check node port follows along.
func testETPLocal(t *testing.T, e *env) {
	s := svc("etp", "LoadBalancer", "10.96.1.1", svcPorts(31001, 31003),
		withETPLocal(etpHealthCheckNodePort), withLBIngress("192.168.60.1"), withExternalIPs("192.168.70.1"))
	e.putV4(t, s, readyEps(allPods...))
	external := []string{hostPort(cluster.Node1IP, 31001), "192.168.60.1:80", "192.168.70.1:80"}
	for _, target := range external {
		e.expect(t, "ext", "tcp", target, node1Pods, sawUnmasqueraded(cluster.ExtIP))
	}
	for _, target := range []string{hostPort(cluster.Node1IP, 31003), "192.168.60.1:53"} {
		e.expect(t, "ext", "udp", target, node1Pods, sawUnmasqueraded(cluster.ExtIP))
	}
	// D2/D4/D6: pods are short-circuited to the cluster-wide set, unmasqueraded.
	for _, target := range external {
		e.expect(t, "pod-a1", "tcp", target, allPods, sawFromPod("pod-a1"))
	}
	e.expect(t, "pod-a1", "tcp", "10.96.1.1:80", allPods, sawFromPod("pod-a1"))
	e.requireHealth(t, 200, 2, 0)

	// No local endpoint: external traffic is dropped (group L2), pods still reach all.
	start := time.Now()
	e.putV4(t, s, readyEps(node2Pods...))
	e.requireHealth(t, 503, 0, time.Since(start))
	for _, target := range external {
		e.expectFail(t, "ext", "tcp", target, "timeout")
		e.expect(t, "pod-a1", "tcp", target, node2Pods, sawUnmasqueraded("10.244.1.11"))
	}
	e.expectFail(t, "ext", "udp", hostPort(cluster.Node1IP, 31003), "timeout")

	// One local endpoint again: 200 with localEndpoints 1, at once.
	start = time.Now()
	e.putV4(t, s, readyEps("pod-a2", "pod-b1"))
	e.requireHealth(t, 200, 1, time.Since(start))
	e.expect(t, "ext", "tcp", external[0], []string{"pod-a2"}, sawUnmasqueraded(cluster.ExtIP))

	// A terminating local endpoint does not count for the health check (upstream counts
	// ready endpoints only), though traffic falls back to it.
	start = time.Now()
	e.putV4(t, s, []ep{{pod: "pod-a2", state: "terminating"}, {pod: "pod-b1"}})
	e.requireHealth(t, 503, 0, time.Since(start))
	e.expect(t, "ext", "tcp", external[0], []string{"pod-a2"}, sawUnmasqueraded(cluster.ExtIP))
}

// healthBody is upstream's service health check answer.
type healthBody struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

// etpHealthCheckNodePort is the health check node port of testETPLocal's Service.
const etpHealthCheckNodePort = 31002

// requireHealth polls the etp Service's health check node port from ext until it
// answers code with localEndpoints n, and fails if that took more than ~1 s after a
// change made `already` ago (0: no change to time).
func (e *env) requireHealth(t *testing.T, code, n int, already time.Duration) {
	t.Helper()
	url := "http://" + hostPort(cluster.Node1IP, etpHealthCheckNodePort) + "/"
	start := time.Now()
	var last string
	err := e.c.WaitFor(func() error {
		out, err := e.c.Exec("ext", "curl", "-s", "-m", "1", "-w", "\n%{http_code}", url)
		last = out
		if err != nil {
			return fmt.Errorf("curl %s: %w", url, err)
		}
		body, status, _ := strings.Cut(strings.TrimSpace(out), "\n")
		if c, _ := strconv.Atoi(strings.TrimSpace(status)); c != code {
			return fmt.Errorf("GET %s: status %s, want %d; body %s", url, status, code, body)
		}
		var h healthBody
		if err := json.Unmarshal([]byte(body), &h); err != nil {
			return fmt.Errorf("GET %s: body %q: %w", url, body, err)
		}
		if h.Service.Namespace != semNS || h.Service.Name != "etp" || h.LocalEndpoints != n || !h.ServiceProxyHealthy {
			return fmt.Errorf("GET %s: body %+v, want service %s/etp, localEndpoints %d, serviceProxyHealthy true", url, h, semNS, n)
		}
		return nil
	}, settle)
	if err != nil {
		t.Errorf("health check node port: %v (last output %q)", err, last)
		return
	}
	if took := already + time.Since(start); already > 0 {
		t.Logf("health check node port showed %d/%d %v after the endpoint change", code, n, took)
		if took > 2*time.Second { // ~1 s, with headroom for a loaded machine
			t.Errorf("health check node port took %v to follow an endpoint change, want ~1 s", took)
		}
	}
}

// testITPLocal: group F. ClusterIP traffic goes to node1's endpoints only; with none
// local it is dropped (F4), not rejected.
func testITPLocal(t *testing.T, e *env) {
	s := svc("itp", "ClusterIP", "10.96.1.2", svcPorts(0, 0), withITPLocal)
	e.putV4(t, s, readyEps(allPods...))
	e.expect(t, "pod-a2", "tcp", "10.96.1.2:80", node1Pods, sawFromPod("pod-a2"))
	e.expect(t, "pod-a2", "udp", "10.96.1.2:53", node1Pods, nil)
	// node2's pods reach the ClusterIP through node1 (node2 routes Service CIDRs to
	// node1): node1's proxy serves its own local endpoints only.
	e.expect(t, "pod-b1", "tcp", "10.96.1.2:80", node1Pods, sawUnmasqueraded("10.244.2.11"))
	e.putV4(t, s, readyEps(node2Pods...))
	e.expectFail(t, "pod-a1", "tcp", "10.96.1.2:80", "timeout")
	e.expectFail(t, "pod-a1", "udp", "10.96.1.2:53", "timeout")
	// F5: with no endpoints at all it is rejected.
	e.putV4(t, s, nil)
	e.expectFail(t, "pod-a1", "tcp", "10.96.1.2:80", "refused")
}

// testTerminatingFallback: groups G and H. With no ready endpoint, serving and
// terminating ones are used, for Cluster and Local sets independently; endpoints that
// are not serving never are.
func testTerminatingFallback(t *testing.T, e *env) {
	local := svc("term-local", "LoadBalancer", "10.96.1.3", svcPorts(31011, 31013), withETPLocal(31012), withLBIngress("192.168.60.3"))
	cl := svc("term-cluster", "LoadBalancer", "10.96.1.4", svcPorts(31014, 31015), withLBIngress("192.168.60.4"))
	itp := svc("term-itp", "ClusterIP", "10.96.1.5", svcPorts(0, 0), withITPLocal)

	// G1/H1: ready endpoints exist, so terminating and not-serving ones are unused.
	mixed := []ep{{pod: "pod-a1"}, {pod: "pod-a2", state: "terminating"}, {pod: "pod-b1", state: "notready"}, {pod: "pod-b2"}}
	e.putV4(t, local, mixed)
	e.putV4(t, cl, mixed)
	e.expect(t, "pod-a2", "tcp", "10.96.1.3:80", []string{"pod-a1", "pod-b2"}, nil)
	e.expect(t, "ext", "tcp", "192.168.60.3:80", []string{"pod-a1"}, sawUnmasqueraded(cluster.ExtIP))
	e.expect(t, "ext", "tcp", "192.168.60.4:80", []string{"pod-a1", "pod-b2"}, sawMasqueradedBy1)

	// G3/G4 and H3/H4: no ready endpoint anywhere; the serving-terminating ones are
	// used, the not-serving (and not-serving terminating) ones never.
	noReady := []ep{{pod: "pod-a1", state: "terminating"}, {pod: "pod-a2", state: "notready-terminating"},
		{pod: "pod-b1", state: "terminating"}, {pod: "pod-b2", state: "notready"}}
	e.putV4(t, local, noReady)
	e.putV4(t, cl, noReady)
	e.expect(t, "pod-a2", "tcp", "10.96.1.3:80", []string{"pod-a1", "pod-b1"}, nil)
	e.expect(t, "ext", "tcp", "192.168.60.3:80", []string{"pod-a1"}, sawUnmasqueraded(cluster.ExtIP))
	e.expect(t, "ext", "udp", "192.168.60.3:53", []string{"pod-a1"}, sawUnmasqueraded(cluster.ExtIP))
	e.expect(t, "ext", "tcp", "192.168.60.4:80", []string{"pod-a1", "pod-b1"}, sawMasqueradedBy1)

	// G4 variant: a ready remote endpoint serves Cluster traffic while the Local set
	// falls back to the local terminating one.
	e.putV4(t, local, []ep{{pod: "pod-a1", state: "terminating"}, {pod: "pod-a2", state: "notready"}, {pod: "pod-b1"}})
	e.expect(t, "pod-a2", "tcp", "10.96.1.3:80", []string{"pod-b1"}, nil)
	e.expect(t, "ext", "tcp", "192.168.60.3:80", []string{"pod-a1"}, sawUnmasqueraded(cluster.ExtIP))

	// G5/G6: only a remote serving-terminating endpoint: pods reach it, external
	// traffic under eTP Local is dropped.
	e.putV4(t, local, []ep{{pod: "pod-a2", state: "notready"}, {pod: "pod-b1", state: "terminating"}})
	e.expect(t, "pod-a2", "tcp", "10.96.1.3:80", []string{"pod-b1"}, nil)
	e.expectFail(t, "ext", "tcp", "192.168.60.3:80", "timeout")

	// G7: nothing serving anywhere: rejected.
	e.putV4(t, local, []ep{{pod: "pod-a1", state: "notready"}, {pod: "pod-b1", state: "notready-terminating"}})
	e.expectFail(t, "pod-a2", "tcp", "10.96.1.3:80", "refused")
	e.expectFail(t, "ext", "tcp", "192.168.60.3:80", "refused")

	// internalTrafficPolicy Local: the local set falls back to local terminating ones
	// even though a remote endpoint is ready.
	e.putV4(t, itp, []ep{{pod: "pod-a1", state: "terminating"}, {pod: "pod-a2", state: "notready"}, {pod: "pod-b1"}})
	e.expect(t, "pod-a2", "tcp", "10.96.1.5:80", []string{"pod-a1"}, nil)
}
