package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/test/e2e/cluster"
	"github.com/kproxy/kproxy/test/kubecluster"
)

// deployObjects decodes every document of deploy/*.yaml into typed objects.
func deployObjects(t *testing.T) []runtime.Object {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kubecluster.DecodeManifests(filepath.Join(root, "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// applyDeploy creates the deploy/ objects through the API server (so its validation
// and admission judge them: the DaemonSet's host network, capabilities and host
// paths, the system-node-critical priority class, RBAC that the creator must hold
// itself), checks the stored DaemonSet grants no more than least privilege, and
// returns the kproxy ConfigMap's config.conf.
func applyDeploy(t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	var confText string
	kinds := map[string]int{}
	for _, obj := range deployObjects(t) {
		var err error
		var what string
		switch o := obj.(type) {
		case *v1.ServiceAccount:
			what = "ServiceAccount " + o.Name
			_, err = client.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			what = "ClusterRole " + o.Name
			_, err = client.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			what = "ClusterRoleBinding " + o.Name
			_, err = client.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *v1.ConfigMap:
			what = "ConfigMap " + o.Name
			confText = o.Data["config.conf"]
			_, err = client.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *appsv1.DaemonSet:
			what = "DaemonSet " + o.Name
			var stored *appsv1.DaemonSet
			if stored, err = client.AppsV1().DaemonSets(o.Namespace).Create(ctx, o, metav1.CreateOptions{}); err == nil {
				// As the API server stored it, defaults applied: still least privilege.
				for _, p := range kubecluster.PrivilegeProblems(stored) {
					t.Errorf("deploy/ DaemonSet %s/%s: %s", o.Namespace, o.Name, p)
				}
			}
		default:
			t.Fatalf("deploy/ holds a %T the test does not know how to create", obj)
		}
		if err != nil {
			t.Fatalf("deploy/: the API server rejected %s: %v", what, err)
		}
		kinds[strings.Fields(what)[0]]++
		t.Logf("deploy/: %s created", what)
	}
	for _, k := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"} {
		if kinds[k] != 1 {
			t.Errorf("deploy/ holds %d %s objects, want 1", kinds[k], k)
		}
	}
	if confText == "" {
		t.Fatal("deploy/ ConfigMap has no config.conf")
	}
	return confText
}

// checkDeployConfig runs the ConfigMap's KubeProxyConfiguration through kproxy's own
// --config parsing.
func checkDeployConfig(t *testing.T, confText string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.conf")
	if err := os.WriteFile(path, []byte(confText), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]string{"--config", path, "--hostname-override", "node1"})
	if err != nil {
		t.Fatalf("kproxy rejects the deploy/ ConfigMap's config.conf: %v", err)
	}
	if cfg.Kubeconfig != "/var/lib/kproxy/kubeconfig.conf" || cfg.Mode != "iptables" {
		t.Errorf("deploy/ config: kubeconfig %q mode %q; want /var/lib/kproxy/kubeconfig.conf (the ConfigMap's, where the DaemonSet mounts it) and iptables", cfg.Kubeconfig, cfg.Mode)
	}
	// Metrics on the node only, as upstream; the health check for load balancers on
	// every address.
	if cfg.MetricsBindAddress != "127.0.0.1:10249" || cfg.HealthzBindAddress != "0.0.0.0:10256" {
		t.Errorf("deploy/ config: metrics on %q, healthz on %q; want 127.0.0.1:10249 and 0.0.0.0:10256", cfg.MetricsBindAddress, cfg.HealthzBindAddress)
	}
	for _, w := range cfg.Warnings {
		t.Logf("deploy/ config warning: %s", w)
	}
}

// serviceAccountToken asks the API server for a token of the deploy/ ServiceAccount,
// so kproxy runs with exactly the permissions the manifests grant.
func serviceAccountToken(t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	exp := int64(3600)
	tr, err := client.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "kproxy",
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for ServiceAccount kube-system/kproxy: %v", err)
	}
	return tr.Status.Token
}

// checkLeastPrivilege asks the authorizer what the ServiceAccount may do: everything
// kproxy needs, nothing more of a sample of what it must not.
func checkLeastPrivilege(t *testing.T, client kubernetes.Interface) {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	type attr struct {
		group, resource, verb string
		want                  bool
	}
	cases := []attr{
		{"", "services", "list", true}, {"", "services", "watch", true},
		{"discovery.k8s.io", "endpointslices", "list", true}, {"discovery.k8s.io", "endpointslices", "watch", true},
		{"", "nodes", "list", true}, {"", "nodes", "watch", true},
		{"events.k8s.io", "events", "create", true}, {"events.k8s.io", "events", "patch", true},
		{"", "events", "create", false},
		{"", "services", "update", false}, {"", "services", "delete", false},
		{"discovery.k8s.io", "endpointslices", "create", false},
		{"", "nodes", "patch", false}, {"", "secrets", "list", false}, {"", "pods", "list", false},
		{"", "configmaps", "get", false},
	}
	user := "system:serviceaccount:kube-system:kproxy"
	for _, c := range cases {
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User:               user,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{Group: c.group, Resource: c.resource, Verb: c.verb},
		}}
		out, err := client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview: %v", err)
		}
		if out.Status.Allowed != c.want {
			t.Errorf("%s %s %s.%s: allowed=%v, want %v (%s)", user, c.verb, c.resource, c.group, out.Status.Allowed, c.want, out.Status.Reason)
		}
	}
}
