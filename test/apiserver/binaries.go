// Package apiserver starts a real etcd and kube-apiserver for tests: on an address
// of this machine, with random free ports, a temporary data directory, and
// certificates, tokens and service-account keys generated at start. It returns a
// kubeconfig and a clientset, and can stop and restart the kube-apiserver (same
// ports, same etcd) to test clients through an API outage.
//
// The binaries come from the tools module (hack/build-tools.sh), which builds them
// from the Go module proxy once and caches them.
package apiserver

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BinariesEnv names a directory that already holds kube-apiserver and etcd; when set,
// FindBinaries uses it and builds nothing.
const BinariesEnv = "KPROXY_TOOLS_DIR"

// FindBinaries returns the directory holding the kube-apiserver and etcd binaries:
// $KPROXY_TOOLS_DIR if set, else what hack/build-tools.sh (found above the working
// directory) prints, which builds them on the first call (about 10 minutes) and
// returns at once afterwards. The error says exactly why there are none, so tests can
// skip with it.
func FindBinaries() (string, error) {
	if dir := os.Getenv(BinariesEnv); dir != "" {
		return dir, checkBinaries(dir)
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "hack", "build-tools.sh")
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", script)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s failed: %w\n%s", script, err, lastLines(stderr.String(), 30))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	dir := strings.TrimSpace(lines[len(lines)-1])
	if dir == "" {
		return "", fmt.Errorf("%s printed no directory; stderr:\n%s", script, lastLines(stderr.String(), 30))
	}
	return dir, checkBinaries(dir)
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
