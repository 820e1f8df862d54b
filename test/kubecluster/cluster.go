// Package kubecluster runs a real two-node Kubernetes v1.37 cluster on this machine,
// so that kproxy can be judged the way Kubernetes judges kube-proxy: as the DaemonSet
// of deploy/ under real kubelets, by the upstream e2e suite.
//
// Everything runs in network namespaces of its own; the host's netfilter is never
// touched:
//
//	kc-cp     192.168.90.10  etcd, kube-apiserver, kube-controller-manager,
//	                         kube-scheduler, and the e2e suite
//	kc-node1  192.168.90.11  containerd, kubelet; pods in 10.244.1.0/24 on cni0
//	kc-node2  192.168.90.12  the same; pods in 10.244.2.0/24
//	kc-lan                   the bridge that joins them, like a node network
//
// The processes share the host's mount namespace (kubelet's volume mounts must be
// seen by containerd and runc) and enter their network namespace with nsenter. Each
// node has its own containerd (root, state, socket), CNI configuration and IPAM
// directory, kubelet root and cgroup root. The images (pause, agnhost, kproxy,
// upstream kube-proxy, CoreDNS for the cluster DNS) are built here with go-containerregistry and imported into
// each containerd: no registry is reachable.
//
// Up returns once the nodes are Ready and the proxy DaemonSet runs on both; Down
// removes every process, mount, namespace and cgroup the cluster made.
package kubecluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
)

// Config says what cluster to run and where its parts are.
type Config struct {
	// Repo is the kproxy checkout (deploy/, hack/image-packages.txt).
	Repo string
	// ToolsDir holds the Kubernetes binaries: hack/build-tools.sh cluster.
	ToolsDir string
	// BinDir holds kproxy and pause, built from Repo (static).
	BinDir string
	// CacheDir keeps what outlives a cluster: the Debian root filesystems.
	CacheDir string
	// WorkDir holds the cluster: data, configuration, logs. Down removes it unless
	// KeepLogs.
	WorkDir string
	// Proxy is "kproxy" or "upstream"; Mode a proxy mode.
	Proxy, Mode string
	Log         func(format string, args ...any)
}

// The cluster's fixed layout.
const (
	nsPrefix     = "kc-"
	lanNS        = nsPrefix + "lan"
	cpNS         = nsPrefix + "cp"
	CPIP         = "192.168.90.10"
	lanGateway   = "192.168.90.1"
	lanPrefixLen = 24
	ClusterCIDR  = "10.244.0.0/16"
	ServiceCIDR  = "10.96.0.0/16"
	DNSServiceIP = "10.96.0.10"
	apiPort      = 6443
)

// Node is one worker node's fixed identity.
type Node struct {
	Name    string
	IP      string
	PodCIDR string
	PodGW   string
}

// Nodes are the two worker nodes.
var Nodes = []Node{
	{Name: "node1", IP: "192.168.90.11", PodCIDR: "10.244.1.0/24", PodGW: "10.244.1.1"},
	{Name: "node2", IP: "192.168.90.12", PodCIDR: "10.244.2.0/24", PodGW: "10.244.2.1"},
}

func (n Node) ns() string { return nsPrefix + n.Name }

// Cluster is a running cluster, or the handle Down uses to remove one.
type Cluster struct {
	cfg    Config
	pki    *pki
	Client kubernetes.Interface
	// AdminKubeconfig is the path of a system:masters kubeconfig.
	AdminKubeconfig string

	mu    sync.Mutex
	procs []*process
	// netnsBefore are the named network namespaces that existed before Up: the
	// ones containerd's CNI made since are the cluster's to remove.
	netnsBefore map[string]bool
}

// New returns a cluster handle; nothing runs yet.
func New(cfg Config) *Cluster {
	if cfg.Log == nil {
		cfg.Log = func(string, ...any) {}
	}
	return &Cluster{cfg: cfg, AdminKubeconfig: filepath.Join(cfg.WorkDir, "admin.kubeconfig")}
}

func (c *Cluster) logf(format string, args ...any) { c.cfg.Log(format, args...) }

func (c *Cluster) bin(name string) string  { return filepath.Join(c.cfg.BinDir, name) }
func (c *Cluster) tool(name string) string { return filepath.Join(c.cfg.ToolsDir, name) }

// Up builds the images, starts the control plane and the nodes, deploys the proxy
// and waits until every part is ready. On error the caller still calls Down.
func (c *Cluster) Up(ctx context.Context) error {
	if c.cfg.Proxy != "kproxy" && c.cfg.Proxy != "upstream" {
		return fmt.Errorf("proxy %q: want kproxy or upstream", c.cfg.Proxy)
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "agnhost", "regression-issue-74839", "coredns"} {
		if _, err := os.Stat(c.tool(b)); err != nil {
			return fmt.Errorf("tools: %w (hack/build-tools.sh cluster builds it)", err)
		}
	}
	if err := os.MkdirAll(c.cfg.WorkDir, 0o755); err != nil {
		return err
	}
	c.netnsBefore = namedNetns()
	start := time.Now()
	images, err := c.buildImages(filepath.Join(c.cfg.WorkDir, "images"))
	if err != nil {
		return err
	}
	if err := c.buildNetwork(); err != nil {
		return err
	}
	if c.pki, err = newPKI(filepath.Join(c.cfg.WorkDir, "pki")); err != nil {
		return err
	}
	if err := c.startControlPlane(ctx); err != nil {
		return err
	}
	for _, n := range Nodes {
		if err := c.startNode(ctx, n, images); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	if err := c.waitNodes(ctx); err != nil {
		return err
	}
	if err := c.deployProxy(ctx); err != nil {
		return err
	}
	if err := c.deployDNS(ctx); err != nil {
		return err
	}
	c.logf("cluster up in %v: %s proxy in %s mode on %d nodes; kubeconfig %s",
		time.Since(start).Round(time.Second), c.cfg.Proxy, c.cfg.Mode, len(Nodes), c.AdminKubeconfig)
	return nil
}

// Down stops every process the cluster started (and the containers its nodes ran),
// unmounts what they mounted, and removes its namespaces and cgroups. It works from
// the fixed layout, so it also cleans up after a cluster whose supervisor died.
func (c *Cluster) Down() error {
	var errs []error
	c.mu.Lock()
	procs := c.procs
	c.procs = nil
	c.mu.Unlock()
	// Kubelets first, so nothing restarts containers while they are being killed.
	sort.SliceStable(procs, func(i, j int) bool { return procs[i].order < procs[j].order })
	for _, p := range procs {
		p.Stop(10 * time.Second)
	}
	for _, n := range Nodes {
		killCgroup(cgroupRoot(n))
		killByArg(c.containerdSocket(n))
	}
	if err := unmountUnder(c.cfg.WorkDir); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.removeNetwork())
	for _, n := range Nodes {
		removeCgroup(cgroupRoot(n))
	}
	return errors.Join(errs...)
}

// namedNetns lists /run/netns.
func namedNetns() map[string]bool {
	out := map[string]bool{}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		out[e.Name()] = true
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
