// Package e2e runs kproxy against a cluster of network namespaces with real packets.
// The tests need root and iproute2; without them they skip and say why.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

var (
	skipReason     string // non-empty: the machine cannot run these tests
	echoBin        string
	kproxyBin      string
	kproxyBuildErr error // cmd/kproxy did not build: kproxy tests fail with this
)

type stderrLogger struct{}

func (stderrLogger) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	skipReason = environmentProblem()
	if skipReason != "" {
		fmt.Fprintf(os.Stderr, "e2e: skipping: %s\n", skipReason)
		return m.Run()
	}
	cluster.RemoveLeftovers(stderrLogger{})
	if dir := os.Getenv("KPROXY_E2E_BIN_DIR"); dir != "" {
		// Prebuilt binaries, for machines without a Go toolchain (the IPVS qemu guest).
		echoBin, kproxyBin = dir+"/echoserver", dir+"/kproxy"
		return m.Run()
	}
	root, err := cluster.RepoRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	binDir, err := os.MkdirTemp("", "kproxy-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer func() { _ = os.RemoveAll(binDir) }()
	if echoBin, err = cluster.GoBuild(root, "./test/echoserver", binDir); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	kproxyBin, kproxyBuildErr = cluster.GoBuild(root, "./cmd/kproxy", binDir)
	if kproxyBuildErr != nil {
		fmt.Fprintf(os.Stderr, "e2e: cmd/kproxy does not build; kproxy tests will fail:\n%v\n", kproxyBuildErr)
	}
	return m.Run()
}

// environmentProblem says why this machine cannot build namespace clusters, or "".
func environmentProblem() string {
	if os.Geteuid() != 0 {
		return "not running as root (network namespaces need CAP_SYS_ADMIN)"
	}
	for _, tool := range []string{"ip", "iptables", "iptables-save", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not found in PATH"
		}
	}
	probe := fmt.Sprintf("kpe2e%d-probe", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		return fmt.Sprintf("ip netns add does not work: %v: %s", err, out)
	}
	if out, err := exec.Command("ip", "netns", "del", probe).CombinedOutput(); err != nil {
		return fmt.Sprintf("ip netns del does not work: %v: %s", err, out)
	}
	return ""
}

func requireEnv(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

func requireKproxy(t *testing.T) {
	t.Helper()
	requireEnv(t)
	if kproxyBuildErr != nil {
		t.Fatalf("cmd/kproxy does not build:\n%v", kproxyBuildErr)
	}
}

// newCluster builds a cluster that is removed when the test ends; on failure its
// work dir (logs, manifests, state) is kept and named in the log.
func newCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	c, err := cluster.New(t, cluster.Options{EchoBin: echoBin, KproxyBin: kproxyBin})
	if err != nil {
		t.Fatalf("build cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.KeepWorkDir()
		}
		c.Close()
	})
	return c
}
