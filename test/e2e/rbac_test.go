package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kproxy/kproxy/test/apiserver"
	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// kproxyUser is the user name of the deploy/ ServiceAccount's token.
const kproxyUser = "system:serviceaccount:kube-system:kproxy"

// auditPolicy records every request of kproxy's ServiceAccount at Metadata level
// (who, verb, resource, response code) and nothing else.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    users: ["` + kproxyUser + `"]
  - level: None
`

// grant is one (API group, resource, verb) of an RBAC rule.
type grant struct{ group, resource, verb string }

func (g grant) String() string { return fmt.Sprintf("%s %s.%s", g.verb, g.resource, g.group) }

// TestRBACMinimal runs kproxy with the deploy/ ServiceAccount, bound to exactly the
// ClusterRole of deploy/rbac.yaml, against a real kube-apiserver that writes an
// audit log: kproxy must work with it (Services programmed, an Event recorded and
// then patched as a series, nothing forbidden), and must have used every (group,
// resource, verb) the ClusterRole grants. A grant never used is one too many.
func TestRBACMinimal(t *testing.T) {
	requireKproxy(t)
	bin := apiServerBinaries(t)
	c := newCluster(t)
	removeLink, err := c.LinkRootToNode(cluster.KproxyNode)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(removeLink)
	policy := filepath.Join(c.WorkDir, "audit-policy.yaml")
	auditLog := filepath.Join(c.WorkDir, "audit.log")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := apiserver.Start(apiserver.Options{BinDir: bin, Address: cluster.APIHostIP, Log: t,
		ExtraArgs: []string{"--audit-policy-file=" + policy, "--audit-log-path=" + auditLog, "--audit-log-mode=blocking"}})
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			srv.CloseKeepLogs()
			return
		}
		srv.Close()
	})
	client := srv.Client
	applyDeploy(t, client)
	kubeconfig := filepath.Join(c.WorkDir, "kproxy.kubeconfig")
	if err := srv.WriteKubeconfig(kubeconfig, serviceAccountToken(t, client)); err != nil {
		t.Fatal(err)
	}
	if err := createNamespace(client, ns); err != nil {
		t.Fatal(err)
	}
	if err := createNode(client, "node1", cluster.Node1IP, "10.244.1.0/24", nil); err != nil {
		t.Fatal(err)
	}
	// A process of node1 holds the NodePort to be: kproxy records an Event about it.
	const heldPort = 30998
	squatter, err := c.StartProcess(cluster.KproxyNode, "squatter", echoBin, "serve", "--name", "node1-own", "--tcp", fmt.Sprint(heldPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(squatter.Kill)

	http := []v1.ServicePort{tcpPort("http", 80)}
	cip := createService(t, client, newService("web", v1.ServiceTypeClusterIP, http...)).Spec.ClusterIP
	putSlice(t, client, newSlice("web", "web-1", http, "pod-a2"))
	held := func() *v1.Service {
		s := newService("held", v1.ServiceTypeNodePort, http...)
		s.Spec.Ports[0].NodePort = heldPort
		return s
	}
	createService(t, client, held())
	putSlice(t, client, newSlice("held", "held-1", http, "pod-a2"))

	flags := []string{"--kubeconfig", kubeconfig,
		"--hostname-override", cluster.KproxyNode, "--cluster-cidr", cluster.ClusterCIDR, "--proxy-mode", "iptables",
		"--iptables-min-sync-period", "100ms", "--healthz-bind-address", "127.0.0.1:10256",
		"--metrics-bind-address", "127.0.0.1:10249", "-v", "2"}
	p, err := c.StartProcess(cluster.KproxyNode, "kproxy", kproxyBin, flags...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kproxy log %s (tail):\n%s", p.LogPath, tail(p.Logs(), 60))
		}
		p.Kill()
	})
	ext, err := newNSProber(c.NS("ext"))
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()

	// (1) kproxy works with these permissions.
	waitBackends(t, ext, "web", hostPort(cip, 80), apiFirstSync, "pod-a2")
	waitBackends(t, ext, "held NodePort", hostPort(cluster.Node1IP, heldPort), 10*time.Second, "pod-a2")
	waitEvent(t, client, "default", "Node", cluster.KproxyNode, "FailedToReserveNodePort", 30*time.Second)
	// The same conflict again (the Service deleted, its rules gone so the node's own
	// process answers, then re-created): the recorder patches the Event into a series.
	deleteService(t, client, "held")
	waitBackends(t, ext, "the NodePort once its Service is gone", hostPort(cluster.Node1IP, heldPort), 10*time.Second, "node1-own")
	createService(t, client, held())
	waitBackends(t, ext, "held NodePort again", hostPort(cluster.Node1IP, heldPort), 10*time.Second, "pod-a2")
	err = cluster.WaitFor(func() error {
		ev, err := findEvent(client, "default", "Node", cluster.KproxyNode, "FailedToReserveNodePort")
		if err != nil {
			return err
		}
		if ev.Series == nil || ev.Series.Count < 2 {
			return fmt.Errorf("the Node's Event is not a series of 2 yet: %+v", ev)
		}
		return nil
	}, 30*time.Second)
	if err != nil {
		t.Error(err)
	}
	if logs := p.Logs(); strings.Contains(strings.ToLower(logs), "forbidden") {
		t.Errorf("kproxy's log says forbidden:\n%s", linesWith(strings.ToLower(logs), "forbidden"))
	}
	p.Kill()

	// client-go's informers get their initial state with a streaming list (a watch
	// with sendInitialEvents) from API servers that support it, as this one does, and
	// fall back to list from those that do not, or when the stream fails: the grant
	// of list is for that path. kproxy runs once more with the streaming list turned
	// off (client-go's own feature gate, by environment) to prove it works there too.
	fallback, err := c.StartProcess(cluster.KproxyNode, "kproxy-list", "env",
		append([]string{"KUBE_FEATURE_WatchListClient=false", kproxyBin}, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kproxy (list fallback) log %s (tail):\n%s", fallback.LogPath, tail(fallback.Logs(), 40))
		}
		fallback.Kill()
	})
	err = cluster.WaitFor(func() error {
		if !strings.Contains(fallback.Logs(), syncedLine) {
			return fmt.Errorf("kproxy (list fallback) has not synced with the API server")
		}
		return nil
	}, apiFirstSync)
	if err != nil {
		t.Fatal(err)
	}
	waitBackends(t, ext, "web (list fallback)", hostPort(cip, 80), 10*time.Second, "pod-a2")

	// (2) Every grant of the ClusterRole was used, and no request was refused.
	granted := clusterRoleGrants(t, "kproxy")
	var unused []string
	err = cluster.WaitFor(func() error {
		used, refused, err := auditedRequests(auditLog, kproxyUser)
		if err != nil {
			return err
		}
		if len(refused) > 0 {
			return fmt.Errorf("requests of %s refused: %v", kproxyUser, refused)
		}
		unused = unused[:0]
		for _, g := range granted {
			if !used[g] {
				unused = append(unused, g.String())
			}
		}
		if len(unused) > 0 {
			return fmt.Errorf("granted but not used (yet): %v; used: %v", unused, keysOf(used))
		}
		return nil
	}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("every one of the %d grants of ClusterRole kproxy was used: %v", len(granted), granted)
}

// clusterRoleGrants expands the deploy/ ClusterRole named name into its grants.
func clusterRoleGrants(t *testing.T, name string) []grant {
	t.Helper()
	var out []grant
	for _, obj := range deployObjects(t) {
		role, ok := obj.(*rbacv1.ClusterRole)
		if !ok || role.Name != name {
			continue
		}
		for _, r := range role.Rules {
			if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
				t.Fatalf("ClusterRole %s: rule %+v narrows by name or URL; the test does not expand those", name, r)
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						out = append(out, grant{g, res, v})
					}
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("deploy/ has no ClusterRole %s", name)
	}
	return out
}

// auditEvent is the part of an audit.k8s.io/v1 Event the test reads.
type auditEvent struct {
	Verb string `json:"verb"`
	User struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource string `json:"resource"`
		APIGroup string `json:"apiGroup"`
	} `json:"objectRef"`
	ResponseStatus *metav1.Status `json:"responseStatus"`
}

// auditedRequests reads the audit log: the grants user's successful requests used,
// and the requests refused with 401 or 403.
func auditedRequests(path, user string) (used map[grant]bool, refused []string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = f.Close() }()
	used = map[grant]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e auditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, nil, fmt.Errorf("audit log %s: %w", path, err)
		}
		if e.User.Username != user || e.ObjectRef == nil || e.ResponseStatus == nil {
			continue
		}
		g := grant{e.ObjectRef.APIGroup, e.ObjectRef.Resource, e.Verb}
		switch code := e.ResponseStatus.Code; {
		case code == 401 || code == 403:
			refused = append(refused, fmt.Sprintf("%s: %d", g, code))
		case code < 400 || code == 404 || code == 409:
			// 404 and 409 still prove the verb was allowed (a series patch of an Event
			// that expired, a create that raced).
			used[g] = true
		}
	}
	return used, refused, sc.Err()
}

func keysOf(m map[grant]bool) []string {
	var out []string
	for g := range m {
		out = append(out, g.String())
	}
	sort.Strings(out)
	return out
}
