package kubecluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// Deployment is deploy/'s objects, decoded.
type Deployment struct {
	ServiceAccount     *v1.ServiceAccount
	ClusterRole        *rbacv1.ClusterRole
	ClusterRoleBinding *rbacv1.ClusterRoleBinding
	ConfigMap          *v1.ConfigMap
	DaemonSet          *appsv1.DaemonSet
}

// DecodeManifests decodes every document of the YAML files in dir, in file name
// order, into typed objects.
func DecodeManifests(dir string) ([]runtime.Object, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("no manifests in %s", dir)
	}
	var objs []runtime.Object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s document %d: %w", f, i, err)
			}
			objs = append(objs, obj)
		}
	}
	return objs, nil
}

// ReadDeployment decodes every manifest of deploy/.
func ReadDeployment(repo string) (*Deployment, error) {
	objs, err := DecodeManifests(filepath.Join(repo, "deploy"))
	if err != nil {
		return nil, err
	}
	d := &Deployment{}
	for _, obj := range objs {
		if err := d.add(obj); err != nil {
			return nil, fmt.Errorf("deploy/: %w", err)
		}
	}
	if d.ServiceAccount == nil || d.ClusterRole == nil || d.ClusterRoleBinding == nil || d.ConfigMap == nil || d.DaemonSet == nil {
		return nil, fmt.Errorf("deploy/ lacks one of ServiceAccount, ClusterRole, ClusterRoleBinding, ConfigMap, DaemonSet: %+v", d)
	}
	return d, nil
}

func (d *Deployment) add(obj runtime.Object) error {
	switch o := obj.(type) {
	case *v1.ServiceAccount:
		d.ServiceAccount = o
	case *rbacv1.ClusterRole:
		d.ClusterRole = o
	case *rbacv1.ClusterRoleBinding:
		d.ClusterRoleBinding = o
	case *v1.ConfigMap:
		d.ConfigMap = o
	case *appsv1.DaemonSet:
		d.DaemonSet = o
	default:
		return fmt.Errorf("unexpected object %T", obj)
	}
	return nil
}

// deployProxy creates deploy/'s objects, changed only where a cluster must change
// them: the image, the mode and, for upstream kube-proxy, its binary and its
// built-in role. Both proxies read the same KubeProxyConfiguration. conntrack's
// maxPerCore is 0 here, as kind sets it: nf_conntrack_max is the machine's, not the
// node namespace's, and neither proxy may change it.
func (c *Cluster) deployProxy(ctx context.Context) error {
	d, err := ReadDeployment(c.cfg.Repo)
	if err != nil {
		return err
	}
	conf, err := proxyConfig(d.ConfigMap.Data["config.conf"], c.cfg.Mode)
	if err != nil {
		return err
	}
	d.ConfigMap.Data["config.conf"] = conf
	kc, err := withServer(d.ConfigMap.Data["kubeconfig.conf"], fmt.Sprintf("https://%s:%d", CPIP, apiPort))
	if err != nil {
		return err
	}
	d.ConfigMap.Data["kubeconfig.conf"] = kc
	renderDaemonSet(d.DaemonSet, c.cfg.Proxy)
	ns := d.DaemonSet.Namespace
	cs := c.Client
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, d.ServiceAccount, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("ServiceAccount: %w", err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, d.ClusterRole, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("ClusterRole: %w", err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, d.ClusterRoleBinding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("ClusterRoleBinding: %w", err)
	}
	if c.cfg.Proxy == "upstream" {
		// Upstream kube-proxy's own role (it also reads ServiceCIDRs).
		b := d.ClusterRoleBinding.DeepCopy()
		b.Name = "kproxy-upstream-node-proxier"
		b.RoleRef.Name = "system:node-proxier"
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("ClusterRoleBinding: %w", err)
		}
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, d.ConfigMap, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("ConfigMap: %w", err)
	}
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, d.DaemonSet, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("DaemonSet: %w", err)
	}
	return c.waitFor(ctx, "the "+c.cfg.Proxy+" DaemonSet", 3*time.Minute, func() error {
		if err := c.exitedAny(); err != nil {
			return err
		}
		ds, err := cs.AppsV1().DaemonSets(ns).Get(ctx, d.DaemonSet.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ds.Status.DesiredNumberScheduled != int32(len(Nodes)) || ds.Status.NumberReady != ds.Status.DesiredNumberScheduled {
			return fmt.Errorf("%d of %d proxy pods ready (%d desired)", ds.Status.NumberReady, len(Nodes), ds.Status.DesiredNumberScheduled)
		}
		return nil
	})
}

// renderDaemonSet sets the proxy's image. kproxy keeps deploy/'s least-privilege
// securityContext untouched, so the cluster runs what operators run. Upstream
// kube-proxy runs as kubeadm deploys it, privileged: it writes /proc/sys itself
// (and fails without route_localnet), and has no --proc-sys-dir.
func renderDaemonSet(ds *appsv1.DaemonSet, proxy string) {
	ctr := &ds.Spec.Template.Spec.Containers[0]
	ctr.Image = KproxyImage
	if proxy != "upstream" {
		return
	}
	ctr.Image = UpstreamImage
	var cmd []string
	for _, a := range ctr.Command {
		if strings.HasPrefix(a, "--proc-sys-dir") {
			continue
		}
		cmd = append(cmd, strings.Replace(a, "/usr/local/bin/kproxy", "/usr/local/bin/kube-proxy", 1))
	}
	ctr.Command = cmd
	privileged := true
	ctr.SecurityContext = &v1.SecurityContext{Privileged: &privileged}
}

// proxyConfig sets mode and conntrack.maxPerCore in a KubeProxyConfiguration.
func proxyConfig(conf, mode string) (string, error) {
	var m map[string]any
	if err := yaml.Unmarshal([]byte(conf), &m); err != nil {
		return "", fmt.Errorf("deploy/ ConfigMap config.conf: %w", err)
	}
	m["mode"] = mode
	ct, _ := m["conntrack"].(map[string]any)
	if ct == nil {
		ct = map[string]any{}
	}
	ct["maxPerCore"] = 0
	m["conntrack"] = ct
	b, err := yaml.Marshal(m)
	return string(b), err
}

// withServer sets the API server address in deploy/'s kubeconfig.conf, the value an
// operator sets there for their cluster.
func withServer(kubeconfig, server string) (string, error) {
	cfg, err := clientcmd.Load([]byte(kubeconfig))
	if err != nil {
		return "", fmt.Errorf("deploy/ ConfigMap kubeconfig.conf: %w", err)
	}
	if len(cfg.Clusters) != 1 {
		return "", fmt.Errorf("deploy/ ConfigMap kubeconfig.conf has %d clusters, want 1", len(cfg.Clusters))
	}
	for _, cl := range cfg.Clusters {
		cl.Server = server
	}
	b, err := clientcmd.Write(*cfg)
	return string(b), err
}
