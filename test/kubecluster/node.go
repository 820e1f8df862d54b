package kubecluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func (c *Cluster) nodeDir(n Node) string { return filepath.Join(c.cfg.WorkDir, n.Name) }

func (c *Cluster) containerdSocket(n Node) string {
	return filepath.Join(c.nodeDir(n), "containerd", "containerd.sock")
}

// startNode starts the node's containerd, imports the images into it, and starts its
// kubelet; the Node registers itself and Up sets its pod CIDR.
func (c *Cluster) startNode(ctx context.Context, n Node, images []string) error {
	dir := c.nodeDir(n)
	for _, d := range []string{"containerd", "cni/net.d", "cni/ipam", "kubelet"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := makeCgroup(cgroupRoot(n)); err != nil {
		return err
	}
	files := map[string]string{
		filepath.Join(dir, "containerd", "config.toml"):            c.containerdConfig(n),
		filepath.Join(dir, "cni", "net.d", "10-kcluster.conflist"): cniConfig(n, filepath.Join(dir, "cni", "ipam")),
		filepath.Join(dir, "kubelet", "config.yaml"):               c.kubeletConfig(n),
		// Pods get the cluster DNS from the kubelet; the node's own resolv.conf
		// names no server: nothing outside this machine is reachable.
		filepath.Join(dir, "resolv.conf"): "search cluster.local\n",
	}
	for path, data := range files {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			return err
		}
	}
	cd, err := c.start(n.Name+"-containerd", orderContainerd, n.ns(), "containerd", "--config", filepath.Join(dir, "containerd", "config.toml"))
	if err != nil {
		return err
	}
	sock := c.containerdSocket(n)
	if err := c.waitFor(ctx, n.Name+"'s containerd", time.Minute, func() error {
		if err := cd.Exited(); err != nil {
			return err
		}
		_, err := run("ctr", "--address", sock, "version")
		return err
	}); err != nil {
		return err
	}
	start := time.Now()
	for _, img := range images {
		if _, err := run("ctr", "--address", sock, "--namespace", "k8s.io", "images", "import", "--no-unpack=false", img); err != nil {
			return fmt.Errorf("import %s: %w", filepath.Base(img), err)
		}
	}
	c.logf("%s: %d images imported in %v", n.Name, len(images), time.Since(start).Round(time.Second))
	kubeconfig := filepath.Join(dir, "kubelet.kubeconfig")
	if err := c.pki.writeKubeconfig(kubeconfig, "system:node:"+n.Name); err != nil {
		return err
	}
	kl, err := c.start(n.Name+"-kubelet", orderKubelet, n.ns(), c.tool("kubelet"),
		"--config="+filepath.Join(dir, "kubelet", "config.yaml"),
		"--kubeconfig="+kubeconfig,
		"--root-dir="+filepath.Join(dir, "kubelet", "root"),
		"--cert-dir="+filepath.Join(dir, "kubelet", "pki"),
		"--hostname-override="+n.Name, "--node-ip="+n.IP,
		"--v=2")
	if err != nil {
		return err
	}
	return c.waitFor(ctx, n.Name+" registered", 2*time.Minute, func() error {
		if err := kl.Exited(); err != nil {
			return err
		}
		node, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if node.Spec.PodCIDR == "" {
			patch := fmt.Sprintf(`{"spec":{"podCIDR":%q,"podCIDRs":[%q]}}`, n.PodCIDR, n.PodCIDR)
			_, err = c.Client.CoreV1().Nodes().Patch(ctx, n.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
		}
		return err
	})
}

// waitNodes waits until both nodes are Ready (their runtime and CNI are up).
func (c *Cluster) waitNodes(ctx context.Context) error {
	return c.waitFor(ctx, "the nodes Ready", 3*time.Minute, func() error {
		if err := c.exitedAny(); err != nil {
			return err
		}
		for _, n := range Nodes {
			node, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			ready := false
			var why string
			for _, cond := range node.Status.Conditions {
				if cond.Type == v1.NodeReady {
					ready = cond.Status == v1.ConditionTrue
					why = cond.Message
				}
			}
			if !ready {
				return fmt.Errorf("%s not Ready: %s", n.Name, why)
			}
		}
		return nil
	})
}

// containerdConfig runs a containerd of the node's own: root, state and socket under
// the node's directory, runc with cgroupfs (the kubelet's driver), the CNI
// configuration and IPAM of the node, and the pause image built here as the sandbox.
func (c *Cluster) containerdConfig(n Node) string {
	dir := filepath.Join(c.nodeDir(n), "containerd")
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  enable_cdi = false
  # Processes here lack CAP_SYS_RESOURCE, so none may lower its OOM score (the
  # kubelet asks -998 for every sandbox): keep each at least containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.containerdSocket(n), c.containerdSocket(n)+".ttrpc",
		PauseImage, filepath.Join(c.nodeDir(n), "cni", "net.d"))
}

// cniConfig is the node's pod network: a bridge (cni0, the pods' gateway) with the
// node's pod range from host-local IPAM (in the node's own data directory), portmap
// for hostPorts. No masquerade: pods reach the other node's pods by routes.
func cniConfig(n Node, ipamDir string) string {
	conf := map[string]any{
		"cniVersion": "0.4.0",
		"name":       "kcluster",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{
					"type": "host-local", "dataDir": ipamDir,
					"ranges": []any{[]any{map[string]any{"subnet": n.PodCIDR, "gateway": n.PodGW}}},
					"routes": []any{map[string]any{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	b, _ := json.MarshalIndent(conf, "", "  ")
	return string(b)
}

// kubeletConfig is the node's KubeletConfiguration: cgroupfs under the node's own
// cgroup root (several kubelets share this machine; cgroup v1 accepted), no swap or
// node-pressure eviction (a test machine's disk and memory are shared) but a pod's
// own ephemeral-storage limit enforced (a Service test evicts a pod so), anonymous
// authentication so the API server can exec and read logs, the cluster DNS address.
func (c *Cluster) kubeletConfig(n Node) string {
	lines := []string{
		"apiVersion: kubelet.config.k8s.io/v1beta1",
		"kind: KubeletConfiguration",
		"address: " + n.IP,
		"healthzBindAddress: 127.0.0.1",
		"readOnlyPort: 0",
		"failCgroupV1: false",
		"failSwapOn: false",
		"cgroupDriver: cgroupfs",
		"cgroupRoot: " + cgroupRoot(n),
		"cgroupsPerQOS: true",
		"enforceNodeAllocatable: []",
		"containerRuntimeEndpoint: unix://" + c.containerdSocket(n),
		"resolvConf: " + filepath.Join(c.nodeDir(n), "resolv.conf"),
		"podLogsDir: " + filepath.Join(c.nodeDir(n), "pod-logs"),
		"clusterDNS: [" + DNSServiceIP + "]",
		"clusterDomain: cluster.local",
		"authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}",
		"authorization: {mode: AlwaysAllow}",
		"evictionHard: {memory.available: \"0%\", nodefs.available: \"0%\", imagefs.available: \"0%\"}",
		"imageGCHighThresholdPercent: 100",
		"imageGCLowThresholdPercent: 99",
		"serializeImagePulls: false",
		"registerNode: true",
		"podCIDR: " + n.PodCIDR,
		"maxPods: 110",
		"localStorageCapacityIsolation: true",
		"protectKernelDefaults: false",
		"makeIPTablesUtilChains: false",
	}
	return strings.Join(lines, "\n") + "\n"
}
