package e2e

import (
	"encoding/json"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// proxyHealthBody is upstream's /healthz JSON body.
type proxyHealthBody struct {
	LastUpdated string `json:"lastUpdated"`
	CurrentTime string `json:"currentTime"`
	Healthy     bool   `json:"healthy"`
}

// healthTimeout is upstream's: twice the sync period.
const healthTimeout = 2 * opsSyncPeriod

func getProxyHealth(t *testing.T, e *env, path string) (int, proxyHealthBody, string) {
	t.Helper()
	code, body, err := node1HTTP(e.c, "http://127.0.0.1:10256"+path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	var b proxyHealthBody
	if code == 200 || code == 503 {
		if err := json.Unmarshal([]byte(body), &b); err != nil {
			t.Fatalf("GET %s: code %d, body is not the JSON document: %v\n%s", path, code, err, body)
		}
	}
	return code, b, body
}

// testHealthzStuckSync makes kproxy's syncs fail for real, the way a node can break
// them, and checks /healthz and /livez: 200 while the pending change is younger than
// the health timeout, 503 (with lastUpdated lagging currentTime) once it is older,
// and 200 again once a sync succeeds.
//
//   - iptables mode: another program's rule jumps into the KUBE-SVC chain of a
//     Service that is then deleted; the kernel refuses to delete a chain in use
//     ("Device or resource busy"), so every restore fails until that rule goes.
//     (The xtables lock would not do: iptables-nft, the flavour in use, takes none.)
//   - nftables mode: another program deletes kproxy's table and creates its own
//     "ip kube-proxy" table with the owner flag; the kernel refuses every change to an
//     owned table from anyone else, until its owner exits.
func testHealthzStuckSync(t *testing.T, e *env) {
	e.dumpOnFailure(t, "held")
	if code, _, body := getProxyHealth(t, e, "/healthz"); code != 200 {
		t.Fatalf("/healthz before the fault: %d %s", code, body)
	}
	before := scrapeMetrics(t, e.c)
	var release func()
	var faultAt time.Time
	if e.mode == "nftables" {
		release, faultAt = ownKubeProxyTable(t, e)
	} else {
		release, faultAt = referenceServiceChain(t, e)
	}
	defer release()

	// Healthy until the change has waited the health timeout; unhealthy after.
	var first503 time.Time
	var body proxyHealthBody
	err := e.c.WaitFor(func() error {
		code, b, raw := getProxyHealth(t, e, "/healthz")
		if code == 503 {
			first503, body = time.Now(), b
			return nil
		}
		return errorf("/healthz %d %s", code, raw)
	}, healthTimeout+3*time.Second)
	if err != nil {
		t.Fatalf("healthz never went 503 while syncs failed: %v\nkproxy log:\n%s", err, tail(e.proxy.Logs(), 20))
	}
	stuckFor := first503.Sub(faultAt)
	t.Logf("HEALTHZ_503 mode=%s after=%v body=%+v", e.mode, stuckFor.Round(10*time.Millisecond), body)
	if stuckFor < healthTimeout-500*time.Millisecond {
		t.Errorf("healthz went 503 %v after the fault, before the health timeout %v", stuckFor, healthTimeout)
	}
	last, err1 := time.Parse(time.RFC3339Nano, body.LastUpdated)
	now, err2 := time.Parse(time.RFC3339Nano, body.CurrentTime)
	if err1 != nil || err2 != nil {
		t.Errorf("503 body times do not parse: %v %v (%+v)", err1, err2, body)
	} else if lag := now.Sub(last); lag < healthTimeout-500*time.Millisecond {
		t.Errorf("503 body: lastUpdated %s is only %v before currentTime %s", body.LastUpdated, lag, body.CurrentTime)
	}
	if body.Healthy {
		t.Error("503 body says healthy")
	}
	if code, _, raw := getProxyHealth(t, e, "/livez"); code != 503 {
		t.Errorf("/livez while stuck: %d %s", code, raw)
	}

	release()
	releasedAt := time.Now()
	err = e.c.WaitFor(func() error {
		if code, _, raw := getProxyHealth(t, e, "/healthz"); code != 200 {
			return errorf("/healthz %d %s", code, raw)
		}
		return nil
	}, opsSyncPeriod+3*time.Second)
	if err != nil {
		t.Fatalf("healthz did not recover after the fault was removed: %v\nkproxy log:\n%s", err, tail(e.proxy.Logs(), 20))
	}
	t.Logf("HEALTHZ_200 mode=%s after_release=%v", e.mode, time.Since(releasedAt).Round(10*time.Millisecond))
	if e.mode == "nftables" {
		// The table is kproxy's again, with every Service.
		e.waitAnswer(t, "pod-a1", "tcp", "10.96.0.80:80", 3*time.Second)
	}
	code, b, _ := getProxyHealth(t, e, "/livez")
	if code != 200 || !b.Healthy {
		t.Errorf("/livez after recovery: %d %+v", code, b)
	}
	after := scrapeMetrics(t, e.c)
	failures := "kubeproxy_sync_proxy_rules_iptables_restore_failures_total"
	if e.mode == "nftables" {
		failures = "kubeproxy_sync_proxy_rules_nftables_sync_failures_total"
	}
	fb, _ := before.get(failures, "ip_family", "IPv4")
	fa, _ := after.get(failures, "ip_family", "IPv4")
	if fa <= fb {
		t.Errorf("%s did not count the failed syncs: %v then %v", failures, fb, fa)
	}
	if v, _ := after.get("kubeproxy_proxy_healthz_total", "code", "503"); v < 1 {
		t.Errorf("kubeproxy_proxy_healthz_total{code=503} = %v", v)
	}
}

var svcChainRE = regexp.MustCompile(`-j (KUBE-SVC-[A-Z0-9]+)`)

// referenceServiceChain programs Service e2e/held, makes a foreign nat rule jump
// into its KUBE-SVC chain, and deletes the Service. It returns the release (delete
// the foreign rule) and the time of the deletion.
func referenceServiceChain(t *testing.T, e *env) (func(), time.Time) {
	svc := cluster.Service{Namespace: ns, Name: "held", ClusterIP: "10.96.0.80", Ports: []cluster.ServicePort{httpPort}}
	e.apply(t, svc, "pod-b1")
	e.waitAnswer(t, "pod-a1", "tcp", "10.96.0.80:80", 5*time.Second)
	var chain string
	for _, line := range strings.Split(e.c.IPTablesSave(cluster.KproxyNode), "\n") {
		if strings.Contains(line, "-A KUBE-SERVICES ") && strings.Contains(line, "e2e/held:http cluster IP") {
			if m := svcChainRE.FindStringSubmatch(line); m != nil {
				chain = m[1]
			}
		}
	}
	if chain == "" {
		t.Fatal("no KUBE-SVC chain for e2e/held:http in iptables-save")
	}
	rule := []string{"OUTPUT", "-d", "10.255.255.1/32", "-m", "comment", "--comment", "foreign reference", "-j", chain}
	ipt := func(op string) error {
		_, err := e.c.Exec(cluster.KproxyNode, append([]string{"iptables", "-t", "nat", op}, rule...)...)
		return err
	}
	if err := ipt("-I"); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			if err := ipt("-D"); err != nil {
				t.Errorf("removing the foreign rule: %v", err)
			}
		}
	}
	for _, m := range []string{"eps-held", "svc-held"} {
		if err := e.c.RemoveManifest(m); err != nil {
			release()
			t.Fatal(err)
		}
	}
	t.Logf("nat OUTPUT jumps into %s; Service e2e/held deleted", chain)
	return release, time.Now()
}

// ownKubeProxyTable replaces kproxy's nftables table, in one transaction, by an
// "ip kube-proxy" table owned by an nft process that stays alive until release.
func ownKubeProxyTable(t *testing.T, e *env) (func(), time.Time) {
	svc := cluster.Service{Namespace: ns, Name: "held", ClusterIP: "10.96.0.80", Ports: []cluster.ServicePort{httpPort}}
	e.apply(t, svc, "pod-b1")
	e.waitAnswer(t, "pod-a1", "tcp", "10.96.0.80:80", 5*time.Second)
	cmd := exec.Command("ip", "netns", "exec", e.c.NS(cluster.KproxyNode), "nft", "-i")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			_ = stdin.Close()
			_ = cmd.Wait()
		}
	}
	if _, err := io.WriteString(stdin, "delete table ip kube-proxy; add table ip kube-proxy { flags owner; }\n"); err != nil {
		release()
		t.Fatal(err)
	}
	at := time.Now()
	err = e.c.WaitFor(func() error {
		if rs := e.c.NFTListRuleset(cluster.KproxyNode); !strings.Contains(rs, "flags owner") {
			return errorf("the owned table is not there yet:\n%s", rs)
		}
		return nil
	}, 3*time.Second)
	if err != nil {
		release()
		t.Fatal(err)
	}
	return release, at
}
