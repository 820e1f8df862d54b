package kubecluster

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// startControlPlane runs etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler in the control plane's namespace and waits until the API server
// serves and the default ServiceAccount exists (pods cannot be created before).
func (c *Cluster) startControlPlane(ctx context.Context) error {
	dir := c.cfg.WorkDir
	etcd, err := c.start("etcd", orderEtcd, cpNS, c.tool("etcd"),
		"--name=cp", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=cp=http://127.0.0.1:2380",
		// A test cluster: losing it on a host crash costs nothing; fsyncs cost minutes.
		"--unsafe-no-fsync=true", "--log-level=warn")
	if err != nil {
		return err
	}
	p := c.pki
	api, err := c.start("kube-apiserver", orderControlPlane, cpNS, c.tool("kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address="+CPIP, "--advertise-address="+CPIP, "--secure-port="+strconv.Itoa(apiPort),
		"--cert-dir="+filepath.Join(dir, "pki", "apiserver"),
		"--tls-cert-file="+p.certFile, "--tls-private-key-file="+p.keyFile,
		"--client-ca-file="+p.caFile,
		"--token-auth-file="+p.tokenFile,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p.saPubFile, "--service-account-signing-key-file="+p.saKeyFile,
		"--service-cluster-ip-range="+ServiceCIDR, "--service-node-port-range=30000-32767",
		"--allow-privileged=true",
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false")
	if err != nil {
		return err
	}
	if err := p.writeKubeconfig(c.AdminKubeconfig, "admin"); err != nil {
		return err
	}
	if err := c.Connect(); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "the API server", 3*time.Minute, func() error {
		if err := firstExited(etcd, api); err != nil {
			return err
		}
		_, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return err
	}
	if _, err := c.start("kube-controller-manager", orderControlPlane, cpNS, c.tool("kube-controller-manager"),
		"--kubeconfig="+c.AdminKubeconfig, "--authentication-kubeconfig="+c.AdminKubeconfig, "--authorization-kubeconfig="+c.AdminKubeconfig,
		"--bind-address=127.0.0.1", "--leader-elect=false",
		"--service-account-private-key-file="+p.saKeyFile, "--root-ca-file="+p.caFile,
		"--use-service-account-credentials=true",
		"--cluster-cidr="+ClusterCIDR, "--service-cluster-ip-range="+ServiceCIDR,
		// Pod CIDRs are fixed per node (the CNI configuration names them); Up sets
		// them on the Node objects, so the range allocator stays off.
		"--allocate-node-cidrs=false",
		"--controllers=*"); err != nil {
		return err
	}
	if _, err := c.start("kube-scheduler", orderControlPlane, cpNS, c.tool("kube-scheduler"),
		"--kubeconfig="+c.AdminKubeconfig, "--authentication-kubeconfig="+c.AdminKubeconfig, "--authorization-kubeconfig="+c.AdminKubeconfig,
		"--bind-address=127.0.0.1", "--leader-elect=false"); err != nil {
		return err
	}
	return c.waitFor(ctx, "the default ServiceAccount", 2*time.Minute, func() error {
		if err := c.exitedAny(); err != nil {
			return err
		}
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// Connect makes the admin client, which dials into the control plane's namespace.
func (c *Cluster) Connect() error {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.AdminKubeconfig)
	if err != nil {
		return err
	}
	d, err := newNSDialer(cpNS)
	if err != nil {
		return err
	}
	cfg.Dial = d.DialContext
	cfg.QPS, cfg.Burst = 50, 100
	c.Client, err = kubernetes.NewForConfig(cfg)
	return err
}

// waitFor polls cond every half second until it returns nil, timeout passes or ctx
// ends; the error names what was awaited and cond's last error.
func (c *Cluster) waitFor(ctx context.Context, what string, timeout time.Duration, cond func() error) error {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := cond()
		if err == nil {
			c.logf("%s: ready after %v", what, time.Since(start).Round(100*time.Millisecond))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %w", what, timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %w)", what, ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// exitedAny reports the first of the cluster's processes that exited.
func (c *Cluster) exitedAny() error {
	c.mu.Lock()
	procs := append([]*process(nil), c.procs...)
	c.mu.Unlock()
	return firstExited(procs...)
}

func firstExited(procs ...*process) error {
	for _, p := range procs {
		if err := p.Exited(); err != nil {
			return err
		}
	}
	return nil
}
