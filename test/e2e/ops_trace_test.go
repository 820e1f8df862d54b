package e2e

import (
	"encoding/json"
	"net"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// traceDoc is the part of "kproxy trace --output json" this test checks (the document
// internal/trace/doc.go promises).
type traceDoc struct {
	Mode      string `json:"mode"`
	Verdict   string `json:"verdict"`
	Service   string `json:"service"`
	Endpoints []struct {
		Address     string  `json:"address"`
		Probability float64 `json:"probability"`
		Masqueraded bool    `json:"masqueraded"`
	} `json:"endpoints"`
	Masqueraded bool `json:"masqueraded"`
	Affinity    *struct {
		TimeoutSeconds int `json:"timeoutSeconds"`
	} `json:"affinity"`
	Notes []string `json:"notes"`
}

// traceCase is one packet, sent for real and traced.
type traceCase struct {
	name     string
	from     string // namespace that sends
	origin   string // --from: pod, node or external
	src, iif string // the packet's source address and the interface it enters node1 by
	proto    string
	dst      string
	port     int
	wantSvc  string // the Service the trace must name ("" for none)
	want     string // the verdict the scenario needs; "" when the mode decides (see case)
	affinity bool
}

func traceServices() []struct {
	svc  cluster.Service
	pods []string
} {
	return []struct {
		svc  cluster.Service
		pods []string
	}{
		{cluster.Service{Namespace: ns, Name: "web", ClusterIP: "10.96.0.10", Ports: []cluster.ServicePort{httpPort, dnsPort}}, allPods},
		{cluster.Service{Namespace: ns, Name: "web-np", Type: "NodePort", ClusterIP: "10.96.0.11",
			Ports: []cluster.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, NodePort: 30080}}}, allPods},
		{cluster.Service{Namespace: ns, Name: "web-lb", Type: "LoadBalancer", ClusterIP: "10.96.0.12", Ports: []cluster.ServicePort{httpPort},
			LoadBalancerIngress: []string{"192.168.60.10"}, ExternalIPs: []string{"192.168.70.10"}}, []string{"pod-a2", "pod-b1", "pod-b2"}},
		{cluster.Service{Namespace: ns, Name: "empty", Type: "NodePort", ClusterIP: "10.96.0.20",
			Ports: []cluster.ServicePort{{Name: "http", Port: 80, NodePort: 30020}, {Name: "dns", Protocol: "UDP", Port: 53, NodePort: 30053}}}, nil},
		{cluster.Service{Namespace: ns, Name: "sticky", ClusterIP: "10.96.0.40", Ports: []cluster.ServicePort{httpPort},
			ClientIPAffinity: true, AffinityTimeoutSeconds: 300}, allPods},
		{cluster.Service{Namespace: ns, Name: "self", ClusterIP: "10.96.0.41", Ports: []cluster.ServicePort{httpPort, dnsPort}}, []string{"pod-a1"}},
	}
}

var traceCases = []traceCase{
	{name: "ClusterIPFromPod", from: "pod-a1", origin: "pod", src: "10.244.1.11", iif: "v-a1", proto: "tcp", dst: "10.96.0.10", port: 80, wantSvc: "e2e/web:http", want: "DNAT"},
	{name: "ClusterIPFromPodUDP", from: "pod-a2", origin: "pod", src: "10.244.1.12", iif: "v-a2", proto: "udp", dst: "10.96.0.10", port: 53, wantSvc: "e2e/web:dns", want: "DNAT"},
	{name: "ClusterIPFromNode", from: "node1", origin: "node", src: cluster.Node1IP, proto: "tcp", dst: "10.96.0.10", port: 80, wantSvc: "e2e/web:http", want: "DNAT"},
	{name: "ClusterIPFromExt", from: "ext", origin: "external", src: cluster.ExtIP, iif: "eth0", proto: "tcp", dst: "10.96.0.10", port: 80, wantSvc: "e2e/web:http", want: "DNAT"},
	{name: "NodePortFromExt", from: "ext", origin: "external", src: cluster.ExtIP, iif: "eth0", proto: "tcp", dst: cluster.Node1IP, port: 30080, wantSvc: "e2e/web-np:http", want: "DNAT"},
	{name: "LoadBalancerIP", from: "ext", origin: "external", src: cluster.ExtIP, iif: "eth0", proto: "tcp", dst: "192.168.60.10", port: 80, wantSvc: "e2e/web-lb:http", want: "DNAT"},
	{name: "ExternalIP", from: "ext", origin: "external", src: cluster.ExtIP, iif: "eth0", proto: "tcp", dst: "192.168.70.10", port: 80, wantSvc: "e2e/web-lb:http", want: "DNAT"},
	{name: "NoEndpointsTCP", from: "pod-a1", origin: "pod", src: "10.244.1.11", iif: "v-a1", proto: "tcp", dst: "10.96.0.20", port: 80, wantSvc: "e2e/empty:http", want: "REJECT"},
	{name: "NoEndpointsUDP", from: "pod-a1", origin: "pod", src: "10.244.1.11", iif: "v-a1", proto: "udp", dst: "10.96.0.20", port: 53, wantSvc: "e2e/empty:dns", want: "REJECT"},
	{name: "NoEndpointsNodePort", from: "ext", origin: "external", src: cluster.ExtIP, iif: "eth0", proto: "tcp", dst: cluster.Node1IP, port: 30020, wantSvc: "e2e/empty:http", want: "REJECT"},
	{name: "NoEndpointsNodePortUDP", from: "ext", origin: "external", src: cluster.ExtIP, iif: "eth0", proto: "udp", dst: cluster.Node1IP, port: 30053, wantSvc: "e2e/empty:dns", want: "REJECT"},
	{name: "Affinity", from: "pod-a2", origin: "pod", src: "10.244.1.12", iif: "v-a2", proto: "tcp", dst: "10.96.0.40", port: 80, wantSvc: "e2e/sticky:http", want: "DNAT", affinity: true},
	{name: "Hairpin", from: "pod-a1", origin: "pod", src: "10.244.1.11", iif: "v-a1", proto: "tcp", dst: "10.96.0.41", port: 80, wantSvc: "e2e/self:http", want: "DNAT"},
	{name: "HairpinUDP", from: "pod-a1", origin: "pod", src: "10.244.1.11", iif: "v-a1", proto: "udp", dst: "10.96.0.41", port: 53, wantSvc: "e2e/self:dns", want: "DNAT"},
	// An address of the service CIDR that no Service holds: iptables mode has no rule
	// for it (NONE: it is routed on, to the LAN's dead end), nftables mode drops it
	// when the service CIDRs are known. Either way trace and kernel must agree.
	{name: "UnallocatedClusterIP", from: "pod-a1", origin: "pod", src: "10.244.1.11", iif: "v-a1", proto: "tcp", dst: "10.96.0.99", port: 80},
}

func testTraceAgreesWithKernel(t *testing.T, e *env) {
	var names []string
	for _, s := range traceServices() {
		names = append(names, s.svc.Name)
		e.apply(t, s.svc)
		if err := e.c.WriteManifest("eps-"+s.svc.Name, slice(s.svc, s.pods...).YAML()); err != nil {
			t.Fatal(err)
		}
	}
	e.dumpOnFailure(t, names...)
	e.waitAnswer(t, "pod-a1", "tcp", "10.96.0.41:80", firstSync)
	e.waitAnswer(t, "ext", "tcp", hostPort("192.168.60.10", 80), 5*time.Second)
	err := e.c.WaitFor(func() error {
		if r := e.c.Request("pod-a1", "tcp", "10.96.0.20:80", 1, cluster.Timeout(time.Second))[0]; r.Error != "refused" {
			return errorf("empty service not rejecting yet: %+v", r)
		}
		return nil
	}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range traceCases {
		t.Run(tc.name, func(t *testing.T) { checkTraceCase(t, e, tc) })
	}
}

func checkTraceCase(t *testing.T, e *env, tc traceCase) {
	timeout := time.Second
	n := 40
	if tc.want == "" || tc.want == "REJECT" {
		n = 5
		timeout = 700 * time.Millisecond
	}
	replies := e.c.Request(tc.from, tc.proto, hostPort(tc.dst, tc.port), n, cluster.Timeout(timeout))
	// Traced after the packets: in nftables mode the affinity set then holds this
	// client, and the trace must name the one endpoint it sticks to.
	doc := runTrace(t, e, tc)
	t.Logf("trace: verdict %s service %q endpoints %v masqueraded %v affinity %v; packets: %s",
		doc.Verdict, doc.Service, doc.Endpoints, doc.Masqueraded, doc.Affinity != nil, cluster.Summary(replies))
	if tc.want != "" && doc.Verdict != tc.want {
		t.Errorf("trace verdict %s, the scenario needs %s", doc.Verdict, tc.want)
	}
	if tc.wantSvc != "" && doc.Service != tc.wantSvc {
		t.Errorf("trace names service %q, want %q", doc.Service, tc.wantSvc)
	}
	errs := cluster.Errors(replies)
	switch doc.Verdict {
	case "DNAT":
		checkDNATAgrees(t, tc, doc, replies)
	case "REJECT":
		if errs["refused"] != len(replies) {
			t.Errorf("trace says REJECT but the packets got %s", cluster.Summary(replies))
		}
	case "DROP":
		if errs["timeout"] != len(replies) {
			t.Errorf("trace says DROP but the packets got %s", cluster.Summary(replies))
		}
	case "NONE":
		// Nothing rewrote the packet: it was routed on by its real destination, here
		// to the LAN's dead end, which answers "unreachable"; no backend answered.
		if errs["unreachable"] != len(replies) {
			t.Errorf("trace says NONE (unmodified) but the packets got %s, want all unreachable (the dead end)", cluster.Summary(replies))
		}
	default:
		t.Errorf("unexpected verdict %q", doc.Verdict)
	}
}

// checkDNATAgrees compares a DNAT trace with the answers: every request answered, by
// backends among the trace's endpoints (all of them, with enough requests and no
// affinity), and each backend saw the source the trace's masquerade flag implies.
func checkDNATAgrees(t *testing.T, tc traceCase, doc traceDoc, replies []cluster.Reply) {
	t.Helper()
	if errs := cluster.Errors(replies); len(errs) > 0 {
		t.Errorf("trace says DNAT but %d requests failed: %s", sum(errs), cluster.Summary(replies))
	}
	traced := map[string]bool{} // endpoint IP -> masqueraded
	var tracedIPs []string
	for _, ep := range doc.Endpoints {
		host, _, err := net.SplitHostPort(ep.Address)
		if err != nil {
			t.Fatalf("trace endpoint %q: %v", ep.Address, err)
		}
		traced[host] = ep.Masqueraded
		tracedIPs = append(tracedIPs, host)
	}
	var answered []string
	for backend := range cluster.Spread(replies) {
		ip := cluster.PodByName(backend).IP
		answered = append(answered, ip)
		if _, ok := traced[ip]; !ok {
			t.Errorf("%s (%s) answered but is not among the traced endpoints %v", backend, ip, tracedIPs)
		}
	}
	sort.Strings(answered)
	sort.Strings(tracedIPs)
	if tc.affinity {
		if doc.Affinity == nil {
			t.Error("the Service has ClientIP affinity but the trace reports none")
		}
		if len(answered) != 1 {
			t.Errorf("ClientIP affinity: answers came from %v, want one backend", answered)
		}
	} else if strings.Join(answered, ",") != strings.Join(tracedIPs, ",") {
		t.Errorf("after %d requests the backends that answered %v differ from the traced endpoints %v", len(replies), answered, tracedIPs)
	}
	for _, r := range replies {
		if r.Error != "" {
			continue
		}
		masq := traced[cluster.PodByName(r.Backend).IP]
		seen := r.SeenIP()
		if masq && !node1Addrs[seen] {
			t.Errorf("trace says traffic to %s is masqueraded, but it saw %s (not a node1 address)", r.Backend, seen)
			return
		}
		if !masq && seen != tc.src {
			t.Errorf("trace says traffic to %s is not masqueraded, but it saw %s instead of the client's %s", r.Backend, seen, tc.src)
			return
		}
	}
}

func runTrace(t *testing.T, e *env, tc traceCase) traceDoc {
	t.Helper()
	args := []string{kproxyBin, "trace", "--output", "json", "--protocol", tc.proto, "--source", tc.src,
		"--destination", tc.dst, "--port", strconv.Itoa(tc.port), "--from", tc.origin}
	if tc.iif != "" {
		args = append(args, "--in-interface", tc.iif)
	}
	out, err := e.c.Exec(cluster.KproxyNode, args...)
	if err != nil {
		t.Fatalf("kproxy trace: %v\n%s", err, out)
	}
	var doc traceDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("kproxy trace output is not the JSON document: %v\n%s", err, out)
	}
	if doc.Mode != e.mode {
		t.Errorf("trace read the %s ruleset, kproxy runs in %s mode", doc.Mode, e.mode)
	}
	return doc
}
