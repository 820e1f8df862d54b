// Package cluster builds a small Kubernetes-like cluster out of network namespaces on
// this machine, so kproxy can be tested with real packets: an external client, two
// nodes on a LAN, and four pods running echoserver. It is a regular package (not a
// _test file) because the demo program reuses it.
//
// Topology (every namespace name carries a per-run prefix, see Options.Prefix):
//
//	ext 192.168.50.100 ──┐
//	node1 192.168.50.1 ──┼── bridge br0 in namespace "lan" (192.168.50.254, a dead end)
//	node2 192.168.50.2 ──┘
//	node1: pod-a1 10.244.1.11, pod-a2 10.244.1.12 (point-to-point veths, gateway 10.244.1.1)
//	node2: pod-b1 10.244.2.11, pod-b2 10.244.2.12 (gateway 10.244.2.1)
package cluster

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Logger is what the cluster reports progress to; *testing.T and *testing.B satisfy it.
type Logger interface {
	Logf(format string, args ...any)
}

// Options configures New. Zero values pick the defaults documented on each field.
type Options struct {
	// Prefix is prepended to every namespace name; default "kpe2e<pid>-". It must
	// match LeftoverPattern for RemoveLeftovers to find it after a crash.
	Prefix string
	// KproxyBin and EchoBin are the binaries to run; EchoBin is required, KproxyBin
	// only for StartKproxy and RunKproxyCleanup.
	KproxyBin string
	EchoBin   string
	// TCPPorts and UDPPorts every pod's echoserver listens on; default 80,8080 and 53.
	TCPPorts []int
	UDPPorts []int
	// WorkDir holds the manifests, the state dir and the logs; default a new temp dir.
	WorkDir string
}

// Pod is one echoserver pod of the topology.
type Pod struct {
	Name string // also its namespace's logical name and its echoserver name
	IP   string
	Node string // "node1" or "node2": the nodeName EndpointSlices use
}

// Addresses of the fixed topology.
const (
	ExtIP       = "192.168.50.100"
	Node1IP     = "192.168.50.1"
	Node2IP     = "192.168.50.2"
	LANDeadEnd  = "192.168.50.254"
	ClusterCIDR = "10.244.0.0/16"
	ServiceCIDR = "10.96.0.0/16"
	LBRange     = "192.168.60.0/24"
	ExtIPRange  = "192.168.70.0/24"
	Node1PodGW  = "10.244.1.1"
	Node2PodGW  = "10.244.2.1"
)

// Pods is the fixed set of pods; tests refer to them by name.
var Pods = []Pod{
	{Name: "pod-a1", IP: "10.244.1.11", Node: "node1"},
	{Name: "pod-a2", IP: "10.244.1.12", Node: "node1"},
	{Name: "pod-b1", IP: "10.244.2.11", Node: "node2"},
	{Name: "pod-b2", IP: "10.244.2.12", Node: "node2"},
}

// PodByName returns the pod called name; it panics on an unknown name, which is a
// bug in the test that asked.
func PodByName(name string) Pod {
	for _, p := range Pods {
		if p.Name == name {
			return p
		}
	}
	panic("cluster: no pod named " + name)
}

// Cluster is one built topology. Close removes it.
type Cluster struct {
	log         Logger
	opts        Options
	WorkDir     string // manifests, state and logs live below it
	ManifestDir string // the directory kproxy watches (--manifests)
	StateDir    string // kproxy's --state-dir

	mu        sync.Mutex
	created   []string   // namespaces created, in order
	procs     []*Process // every process started, stopped by Close
	keepWork  bool
	removeDir bool
}

// New builds the topology and starts an echoserver in every pod. On error everything
// created so far is removed again.
func New(log Logger, opts Options) (*Cluster, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("cluster: must run as root to create network namespaces")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix()
	}
	if opts.EchoBin == "" {
		return nil, fmt.Errorf("cluster: Options.EchoBin is required")
	}
	if len(opts.TCPPorts) == 0 {
		opts.TCPPorts = []int{80, 8080}
	}
	if len(opts.UDPPorts) == 0 {
		opts.UDPPorts = []int{53}
	}
	c := &Cluster{log: log, opts: opts}
	if opts.WorkDir == "" {
		dir, err := os.MkdirTemp("", "kproxy-e2e-")
		if err != nil {
			return nil, fmt.Errorf("cluster: work dir: %w", err)
		}
		c.WorkDir, c.removeDir = dir, true
	} else {
		c.WorkDir = opts.WorkDir
	}
	c.ManifestDir = filepath.Join(c.WorkDir, "manifests")
	c.StateDir = filepath.Join(c.WorkDir, "state")
	for _, d := range []string{c.ManifestDir, c.StateDir, c.logDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	if err := c.build(); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.startPods(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) logDir() string { return filepath.Join(c.WorkDir, "logs") }

// NS maps a logical namespace name ("node1", "pod-a1", "ext", "lan") to the real one.
func (c *Cluster) NS(name string) string { return c.opts.Prefix + name }

// Prefix is this cluster's namespace name prefix.
func (c *Cluster) Prefix() string { return c.opts.Prefix }

// KeepWorkDir stops Close from deleting the work dir, so logs survive a failure.
func (c *Cluster) KeepWorkDir() { c.mu.Lock(); c.keepWork = true; c.mu.Unlock() }

// Exec runs args inside the logical namespace ns and returns the combined output.
func (c *Cluster) Exec(ns string, args ...string) (string, error) {
	full := append([]string{"netns", "exec", c.NS(ns)}, args...)
	return run("ip", full...)
}

// ExecInput runs a command inside a namespace with input on its standard input (an
// iptables-restore or nft -f - script) and returns its combined output.
func (c *Cluster) ExecInput(ns, input string, args ...string) (string, error) {
	full := append([]string{"netns", "exec", c.NS(ns)}, args...)
	var out bytes.Buffer
	cmd := exec.Command("ip", full...)
	cmd.Stdin = strings.NewReader(input)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s in %s: %w: %s", strings.Join(args, " "), c.NS(ns), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// run executes a command and folds its output into the error so failures say why.
func run(name string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Close stops every process the cluster started, deletes its namespaces and, unless
// KeepWorkDir was called, its work dir. It is safe to call more than once.
func (c *Cluster) Close() {
	c.mu.Lock()
	procs, created := c.procs, c.created
	c.procs, c.created = nil, nil
	keep := c.keepWork
	c.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
	for i := len(created) - 1; i >= 0; i-- {
		if err := deleteNamespace(created[i]); err != nil {
			c.log.Logf("cluster: %v", err)
		}
	}
	if c.removeDir && !keep {
		_ = os.RemoveAll(c.WorkDir)
	} else if c.WorkDir != "" {
		c.log.Logf("cluster: work dir with logs kept at %s", c.WorkDir)
	}
}
