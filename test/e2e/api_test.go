package e2e

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kproxy/kproxy/test/apiserver"
	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// apiEnv is what the subtests of TestAPI share: the namespace cluster, a real
// kube-apiserver in the root namespace (reached from node1 over a veth), and kproxy
// in node1 watching it with the deploy/ ServiceAccount's token.
type apiEnv struct {
	c          *cluster.Cluster
	srv        *apiserver.Server
	client     kubernetes.Interface // admin
	kubeconfig string               // kproxy's
	proxy      *cluster.Process
	pod        *nsProber // in pod-a1
	ext        *nsProber // in ext
	node       *nsProber // in node1, for kproxy's health endpoints
	// mode is kproxy's --proxy-mode; "" is iptables.
	mode string
}

// TestAPI runs kproxy against a real kube-apiserver and etcd. Objects are written
// with client-go; real packets prove what kproxy made of them.
func TestAPI(t *testing.T) {
	requireKproxy(t)
	a := newAPIEnv(t, apiServerBinaries(t))
	c := a.c
	t.Run("DeployManifests", a.testDeployManifests)
	if t.Failed() {
		return
	}
	a.setupCluster(t)
	a.startProxy(t)
	a.waitProxySynced(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("iptables-save -c of node1 at the end:\n%s", c.IPTablesSave(cluster.KproxyNode))
		}
		if a.proxy != nil {
			a.proxy.Kill()
		}
	})
	cases := []struct {
		name string
		run  func(*testing.T)
	}{
		{"ClusterIPFromPod", a.testClusterIPFromPod},
		{"NodePortFromOutside", a.testNodePortFromOutside},
		{"EndpointsScaledAndMerged", a.testEndpointsScaledAndMerged},
		{"SliceUpdatedWithNewEndpoint", a.testSliceNewEndpoint},
		{"EndpointsGoneThenServiceDeleted", a.testEndpointsGoneThenServiceDeleted},
		{"SelectorsOfTheRealServer", a.testSelectors},
		{"NodeLabelChange", a.testNodeLabelChange},
		{"ProgrammingLatency", a.testProgrammingLatency},
		{"APIServerOutage", a.testAPIServerOutage},
		{"StartWhileAPIServerDown", a.testStartWhileAPIServerDown},
	}
	for _, tc := range cases {
		if !t.Run(tc.name, tc.run) && (a.proxy == nil || !a.proxy.Running()) {
			t.Fatalf("kproxy is gone; log %s:\n%s", a.proxy.LogPath, tail(a.proxy.Logs(), 60))
		}
	}
}

// newAPIEnv builds a namespace cluster linked to the root namespace, starts etcd and
// kube-apiserver (binaries in bin) on the link's root end, and opens the probers;
// all of it goes when t ends. kproxy is not started.
func newAPIEnv(t *testing.T, bin string) *apiEnv {
	t.Helper()
	c := newCluster(t)
	a := &apiEnv{c: c}
	removeLink, err := c.LinkRootToNode(cluster.KproxyNode)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(removeLink)

	a.srv, err = apiserver.Start(apiserver.Options{BinDir: bin, Address: cluster.APIHostIP, Log: t})
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-apiserver log tail:\n%s", a.srv.APIServerLog(30))
			a.srv.CloseKeepLogs()
			return
		}
		a.srv.Close()
	})
	a.client = a.srv.Client

	for name, p := range map[string]**nsProber{"pod-a1": &a.pod, "ext": &a.ext, cluster.KproxyNode: &a.node} {
		if *p, err = newNSProber(c.NS(name)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup((*p).Close)
	}
	return a
}

// testDeployManifests creates deploy/ through the API server, checks what the
// ServiceAccount may do, and gives kproxy a kubeconfig with that account's token.
func (a *apiEnv) testDeployManifests(t *testing.T) {
	conf := applyDeploy(t, a.client)
	checkDeployConfig(t, conf)
	checkLeastPrivilege(t, a.client)
	a.kubeconfig = filepath.Join(a.c.WorkDir, "kproxy.kubeconfig")
	if err := a.srv.WriteKubeconfig(a.kubeconfig, serviceAccountToken(t, a.client)); err != nil {
		t.Fatal(err)
	}
}

// setupCluster registers the two nodes and the test namespace.
func (a *apiEnv) setupCluster(t *testing.T) {
	t.Helper()
	if err := createNamespace(a.client, ns); err != nil {
		t.Fatal(err)
	}
	if err := createNode(a.client, "node1", cluster.Node1IP, "10.244.1.0/24", map[string]string{zoneLabel: "zone-a"}); err != nil {
		t.Fatal(err)
	}
	if err := createNode(a.client, "node2", cluster.Node2IP, "10.244.2.0/24", map[string]string{zoneLabel: "zone-b"}); err != nil {
		t.Fatal(err)
	}
}

const zoneLabel = "topology.kubernetes.io/zone"

// proxyFlags runs kproxy in API mode with the cluster's usual settings.
func (a *apiEnv) proxyFlags() []string {
	return []string{
		"--kubeconfig", a.kubeconfig,
		"--hostname-override", cluster.KproxyNode,
		"--cluster-cidr", cluster.ClusterCIDR,
		"--proxy-mode", a.proxyMode(),
		"--iptables-min-sync-period", "100ms",
		"--healthz-bind-address", "127.0.0.1:10256",
		"--metrics-bind-address", "127.0.0.1:10249",
		"-v", "2",
	}
}

// proxyMode is the --proxy-mode kproxy runs in.
func (a *apiEnv) proxyMode() string {
	if a.mode == "" {
		return "iptables"
	}
	return a.mode
}

func (a *apiEnv) startProxy(t *testing.T) {
	t.Helper()
	p, err := a.c.StartProcess(cluster.KproxyNode, "kproxy", kproxyBin, a.proxyFlags()...)
	if err != nil {
		t.Fatalf("start kproxy: %v", err)
	}
	a.proxy = p
	t.Logf("kproxy started in %s (pid %d), log %s", a.c.NS(cluster.KproxyNode), p.Pid(), p.LogPath)
}

// syncedLine is what kproxy's API source logs once its informers have synced.
const syncedLine = "Initial Services, EndpointSlices and Node received from the API server"

// waitProxySynced waits until kproxy has received its first complete view from the
// API server and logs how long that took.
func (a *apiEnv) waitProxySynced(t *testing.T) {
	t.Helper()
	start := time.Now()
	err := cluster.WaitFor(func() error {
		if !a.proxy.Running() {
			return fmt.Errorf("kproxy exited")
		}
		if !strings.Contains(a.proxy.Logs(), syncedLine) {
			return fmt.Errorf("kproxy has not synced with the API server yet")
		}
		return nil
	}, apiFirstSync)
	if err != nil {
		t.Fatalf("%v; log %s:\n%s", err, a.proxy.LogPath, tail(a.proxy.Logs(), 40))
	}
	t.Logf("kproxy synced with the API server %v after it was started", time.Since(start).Round(time.Millisecond))
}

// dumpOnFailure logs the rules of the named Services and kproxy's log tail when t
// failed.
func (a *apiEnv) dumpOnFailure(t *testing.T, services ...string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dump := a.c.IPTablesSave(cluster.KproxyNode)
		for _, s := range services {
			t.Logf("iptables-save -c of node1, lines mentioning %s/%s:\n%s", ns, s, cluster.RulesMatching(dump, ns+"/"+s))
		}
		if a.proxy != nil {
			t.Logf("kproxy log %s (tail):\n%s", a.proxy.LogPath, tail(a.proxy.Logs(), 40))
		}
	})
}

// sample sends n requests from p to target and returns the answers per backend and
// the failures per error.
func sample(p *nsProber, target string, n int) (answers, failures map[string]int, seen map[string]string) {
	answers, failures, seen = map[string]int{}, map[string]int{}, map[string]string{}
	for i := 0; i < n; i++ {
		r := p.TCP(target, 500*time.Millisecond)
		if r.Error != "" {
			failures[r.Error]++
			continue
		}
		answers[r.Backend]++
		seen[r.Backend] = r.Seen
	}
	return answers, failures, seen
}

// waitBackends polls until n requests from p to target all succeed and exactly the
// named backends answer; it returns how long that took.
func waitBackends(t *testing.T, p *nsProber, what, target string, timeout time.Duration, want ...string) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	err := cluster.WaitFor(func() error {
		answers, failures, _ := sample(p, target, 12*len(want))
		last = fmt.Sprintf("answers %v failures %v", answers, failures)
		if len(failures) == 0 && sameKeys(answers, want) {
			return nil
		}
		return fmt.Errorf("%s", last)
	}, timeout)
	if err != nil {
		t.Fatalf("%s (%s): want answers from exactly %v: %v", what, target, want, err)
	}
	return time.Since(start)
}

// waitError polls until a request from p to target fails with want.
func waitError(t *testing.T, p *nsProber, what, target, want string, timeout time.Duration) {
	t.Helper()
	err := cluster.WaitFor(func() error {
		r := p.TCP(target, 500*time.Millisecond)
		if r.Error == want {
			return nil
		}
		return fmt.Errorf("got backend %q error %q", r.Backend, r.Error)
	}, timeout)
	if err != nil {
		t.Fatalf("%s (%s): want %q: %v", what, target, want, err)
	}
}

func sameKeys(m map[string]int, want []string) bool {
	if len(m) != len(want) {
		return false
	}
	for _, w := range want {
		if m[w] == 0 {
			return false
		}
	}
	return true
}

// sepChains counts the distinct KUBE-SEP chains kproxy made for a service port.
func sepChains(dump, svcPort string) int {
	chains := map[string]bool{}
	for _, line := range strings.Split(dump, "\n") {
		// iptables-save -c puts "[packets:bytes]" before each rule.
		_, rule, ok := strings.Cut(line, "-A KUBE-SEP-")
		if ok && strings.Contains(line, `"`+svcPort+`"`) {
			chains["KUBE-SEP-"+strings.Fields(rule)[0]] = true
		}
	}
	return len(chains)
}

// apiServerBinaries returns the directory of kube-apiserver and etcd: the one named
// by $KPROXY_TOOLS_DIR (hack/test.sh builds the tools before this stage and sets it),
// or, when the e2e tests are run by hand without it, what hack/build-tools.sh builds
// now (about ten minutes cold; its progress is logged). Either way a missing or
// broken build fails the test with the build's own error: these tests run as root,
// where nothing excuses skipping the API source.
func apiServerBinaries(t *testing.T) string {
	t.Helper()
	dir, err := apiserver.FindBinaries()
	if errors.Is(err, apiserver.ErrNoToolsDir) {
		t.Logf("$%s is not set: building the tools with hack/build-tools.sh", apiserver.BinariesEnv)
		dir, err = apiserver.BuildBinaries(t.Logf)
	}
	if err != nil {
		t.Fatalf("kube-apiserver and etcd for the API-source tests: %v", err)
	}
	return dir
}
