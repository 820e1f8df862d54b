// Package apiserver starts a real etcd and kube-apiserver for tests: on an address
// of this machine, with random free ports, a temporary data directory, and
// certificates, tokens and service-account keys generated at start. It returns a
// kubeconfig and a clientset, and can stop and restart the kube-apiserver (same
// ports, same etcd) to test clients through an API outage.
//
// The binaries come from the tools module: hack/build-tools.sh builds them from the
// Go module proxy once, caches them, and prints their directory, which the caller
// passes in $KPROXY_TOOLS_DIR. Looking them up never builds anything: a cold build
// takes about ten minutes, longer than go test's default timeout, so it belongs to
// the script that runs the tests (hack/test.sh), not to a test.
package apiserver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// BinariesEnv names the directory that holds kube-apiserver, etcd and upstream
// kube-proxy, as printed by hack/build-tools.sh.
const BinariesEnv = "KPROXY_TOOLS_DIR"

// ErrNoToolsDir is returned by FindBinaries when $KPROXY_TOOLS_DIR is not set: nobody
// built the tools for this run.
var ErrNoToolsDir = errors.New(BinariesEnv + " is not set (hack/test.sh sets it to what hack/build-tools.sh prints)")

// FindBinaries returns $KPROXY_TOOLS_DIR after checking that it holds executable
// kube-apiserver and etcd binaries. It builds nothing; it returns ErrNoToolsDir when
// the variable is unset, and an error naming the missing file when it is wrong.
func FindBinaries() (string, error) {
	dir := os.Getenv(BinariesEnv)
	if dir == "" {
		return "", ErrNoToolsDir
	}
	return dir, checkBinaries(dir)
}

// RequireBinaries returns the tools directory for a test that needs a real API
// server. When $KPROXY_TOOLS_DIR is unset the test skips, naming the stage of
// hack/test.sh that runs it: the unit-test stage builds nothing. When it is set
// but does not hold the binaries, the test fails: somebody meant it to run.
func RequireBinaries(t testing.TB) string {
	t.Helper()
	dir, err := FindBinaries()
	if errors.Is(err, ErrNoToolsDir) {
		t.Skipf("needs kube-apiserver and etcd: %v; hack/test.sh runs this test in its tools stage, after building them", err)
	}
	if err != nil {
		t.Fatalf("tools directory from $%s: %v", BinariesEnv, err)
	}
	return dir
}

// BuildBinaries runs hack/build-tools.sh (found above the working directory), which
// builds the tools on a cold cache (about ten minutes) and returns at once on a warm
// one, and returns the directory it prints. The script's progress lines go to logf
// as they come, so a long build shows what it is doing; a failed build's error
// carries the script's last lines.
func BuildBinaries(logf func(format string, args ...any)) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "hack", "build-tools.sh")
	cmd := exec.Command("bash", script)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", script, err)
	}
	tail := streamLines(stderr, logf, 30)
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("%s failed: %w\n%s", script, err, strings.Join(*tail, "\n"))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	dir := strings.TrimSpace(lines[len(lines)-1])
	if dir == "" {
		return "", fmt.Errorf("%s printed no directory", script)
	}
	return dir, checkBinaries(dir)
}

// streamLines passes each line of r to logf and keeps the last n for an error
// message. It returns once r is at EOF, which exec.Cmd.Wait waits for.
func streamLines(r io.Reader, logf func(string, ...any), n int) *[]string {
	var tail []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		logf("build-tools: %s", sc.Text())
		tail = append(tail, sc.Text())
		if len(tail) > n {
			tail = tail[1:]
		}
	}
	return &tail
}

func checkBinaries(dir string) error {
	for _, b := range []string{"kube-apiserver", "etcd"} {
		p := filepath.Join(dir, b)
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("test binary %s: %w", p, err)
		}
		if st.Mode()&0o111 == 0 {
			return fmt.Errorf("test binary %s is not executable", p)
		}
	}
	return nil
}

// repoRoot walks up from the working directory to kproxy's go.mod (not the tools
// module's, which has a different module path).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/kproxy/kproxy\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no kproxy go.mod above the working directory")
		}
		dir = parent
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
