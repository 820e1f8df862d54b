package kubecluster

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// TestDockerfileMatchesClusterImage keeps the Dockerfile and the cluster's image
// build from drifting apart: the same Debian release, the same package list file,
// and the binary at the same path with the same entrypoint.
func TestDockerfileMatchesClusterImage(t *testing.T) {
	repo := filepath.Join("..", "..")
	b, err := os.ReadFile(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	if want := "FROM debian:" + DebianSuite + "-slim"; !strings.Contains(df, want+"\n") {
		t.Errorf("the Dockerfile's runtime base is not %q (the cluster's images use Debian %s)", want, DebianSuite)
	}
	if !strings.Contains(df, "COPY hack/image-packages.txt ") {
		t.Errorf("the Dockerfile does not install hack/image-packages.txt, the list the cluster's image uses")
	}
	if !regexp.MustCompile(`(?m)^ENTRYPOINT \["/usr/local/bin/kproxy"\]$`).MatchString(df) ||
		!strings.Contains(df, "/out/kproxy /usr/local/bin/kproxy") {
		t.Errorf("the Dockerfile's binary path or entrypoint is not /usr/local/bin/kproxy, the cluster image's")
	}
	pkgs, err := ProxyPackages(repo)
	if err != nil {
		t.Fatal(err)
	}
	for _, need := range []string{"iptables", "nftables", "conntrack", "kmod"} {
		if !slices.Contains(pkgs, need) {
			t.Errorf("hack/image-packages.txt lacks %s: %v", need, pkgs)
		}
	}
	c := New(Config{Repo: repo})
	specs, err := c.imageSpecs()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		if s.ref != KproxyImage {
			continue
		}
		if !slices.Equal(s.packages, pkgs) || !slices.Equal(s.entrypoint, []string{"/usr/local/bin/kproxy"}) ||
			len(s.files) != 1 || s.files[0].path != "/usr/local/bin/kproxy" {
			t.Errorf("the cluster's kproxy image differs from the Dockerfile's: %+v", s)
		}
	}
}

// TestReadDeployment: deploy/ decodes into the five objects the cluster creates,
// and the proxy configuration's mode and conntrack setting are what the cluster
// asks for, the rest untouched.
func TestReadDeployment(t *testing.T) {
	d, err := ReadDeployment(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if got := d.DaemonSet.Spec.Template.Spec.Containers[0].Command[0]; got != "/usr/local/bin/kproxy" {
		t.Errorf("DaemonSet command %q", got)
	}
	conf, err := proxyConfig(d.ConfigMap.Data["config.conf"], "nftables")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"mode: nftables", "maxPerCore: 0", "clusterCIDR: 10.244.0.0/16", "healthzBindAddress: 0.0.0.0:10256",
		"metricsBindAddress: 127.0.0.1:10249", "kubeconfig: /var/lib/kproxy/kubeconfig.conf"} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
}

// TestDeployKubeconfig: deploy/'s kubeconfig.conf authenticates with the
// ServiceAccount's token and CA as the kubelet mounts them, and the cluster sets its
// server.
func TestDeployKubeconfig(t *testing.T) {
	d, err := ReadDeployment(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	text, err := withServer(d.ConfigMap.Data["kubeconfig.conf"], "https://192.168.90.10:6443")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil {
		t.Fatalf("no current context %q", cfg.CurrentContext)
	}
	cl, user := cfg.Clusters[ctx.Cluster], cfg.AuthInfos[ctx.AuthInfo]
	if cl == nil || user == nil {
		t.Fatalf("context %q names cluster %q and user %q, not both defined", cfg.CurrentContext, ctx.Cluster, ctx.AuthInfo)
	}
	const sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
	if cl.Server != "https://192.168.90.10:6443" || cl.CertificateAuthority != sa+"ca.crt" || user.TokenFile != sa+"token" {
		t.Errorf("server %q CA %q tokenFile %q", cl.Server, cl.CertificateAuthority, user.TokenFile)
	}
}
