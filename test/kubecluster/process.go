package kubecluster

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kproxy/kproxy/test/proc"
)

// process is one long-running part of the cluster, with its place in the stop order.
type process struct {
	*proc.Process
	order int // Down stops lower orders first
}

// The stop order: kubelets before the runtimes they drive, the control plane last.
const (
	orderKubelet = iota
	orderContainerd
	orderControlPlane
	orderEtcd
)

// start runs bin in network namespace ns (nsenter keeps the host's mount namespace:
// a kubelet's mounts must be seen by containerd and runc), logging to
// WorkDir/logs/<name>.log. The process dies with this one.
func (c *Cluster) start(name string, order int, ns, bin string, args ...string) (*process, error) {
	logDir := filepath.Join(c.cfg.WorkDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns, "--", bin}, args...)...)
	pr, err := proc.Start(name, filepath.Join(logDir, name+".log"), cmd)
	if err != nil {
		return nil, err
	}
	p := &process{Process: pr, order: order}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

// run runs a short command and returns its combined output.
func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// inNS runs a short command in network namespace ns.
func inNS(ns string, name string, args ...string) (string, error) {
	return run("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// cgroupRoot is the node's kubelet cgroupRoot: its pods' cgroups live below it in
// every cgroup v1 hierarchy (and in the v2 one where that is the only one).
func cgroupRoot(n Node) string { return "/kproxy-cluster-" + n.Name }

// cgroupHierarchies are the mounted cgroup hierarchies: every v1 controller mount,
// or the unified one.
func cgroupHierarchies() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fields, pf := strings.Fields(pre), strings.Fields(post)
		if len(fields) >= 5 && len(pf) >= 1 && (pf[0] == "cgroup" || pf[0] == "cgroup2") {
			out = append(out, fields[4])
		}
	}
	return out
}

// makeCgroup creates the node's cgroup root in every hierarchy: the kubelet requires
// it to exist in each of them.
func makeCgroup(root string) error {
	for _, h := range cgroupHierarchies() {
		if err := os.MkdirAll(filepath.Join(h, root), 0o755); err != nil {
			return fmt.Errorf("cgroup %s in %s: %w", root, h, err)
		}
	}
	return nil
}

// killCgroup SIGKILLs every process in the cgroup tree root (the node's containers)
// in every hierarchy.
func killCgroup(root string) {
	for _, h := range cgroupHierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, root), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
	}
}

// removeCgroup removes the cgroup tree root, deepest first, once its processes are
// gone (it retries for a few seconds while they exit).
func removeCgroup(root string) {
	for _, h := range cgroupHierarchies() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, root), func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
		for _, d := range dirs {
			for i := 0; i < 50 && os.Remove(d) != nil; i++ {
				if _, err := os.Stat(d); os.IsNotExist(err) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
}

// killByArg SIGKILLs every process whose command line has arg as one argument: the
// containerd shims of a node, which outlive their containerd (they name its socket).
func killByArg(arg string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, a := range bytes.Split(b, []byte{0}) {
			if string(a) == arg {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				break
			}
		}
	}
}

// unmountUnder lazily unmounts every mount point below dir, deepest first: the
// kubelets' volumes, containerd's root filesystems, the CNI's network namespaces.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			points = append(points, fields[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	var failed []string
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && err != syscall.EINVAL && err != syscall.ENOENT {
			failed = append(failed, fmt.Sprintf("%s: %v", p, err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("unmount: %s", strings.Join(failed, "; "))
	}
	return nil
}
