package kubecluster

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// DebianSuite is the Debian release of every image's root filesystem: the
// Dockerfile's base (debian:<suite>-slim) is the same one; a unit test holds them
// together.
const DebianSuite = "bookworm"

// The image names the cluster uses. Pause and agnhost are the names the upstream e2e
// suite v1.37 asks for (test/utils/image/manifest.go); no registry is reachable, so
// they are built here and imported into each node's containerd under these names,
// and the kubelet never pulls (imagePullPolicy IfNotPresent finds them).
const (
	PauseImage    = "registry.k8s.io/pause:3.10.2"
	AgnhostImage  = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	KproxyImage   = "kproxy.local/kproxy:dev"
	UpstreamImage = "kproxy.local/kube-proxy:v1.37.2"
	CoreDNSImage  = "kproxy.local/coredns:dev"
	// Two more images the selected tests run: a privileged host-network pod with
	// iptables and conntrack (the kproxy image's root filesystem), and BusyBox, whose
	// tests want sh, sleep and nc (agnhost's root filesystem has Debian's).
	DistrolessIptablesImage = "registry.k8s.io/build-image/distroless-iptables:v0.9.9"
	BusyBoxImage            = "registry.k8s.io/e2e-test-images/busybox:1.37.0-2"
	// The Conntrack test of upstream issue 74839 (a TCP server that answers with an
	// out-of-window packet) runs upstream's own test program, built here.
	Issue74839Image = "registry.k8s.io/e2e-test-images/regression-issue-74839:1.5"
)

// agnhostPackages are what agnhost's own image has from its Alpine base and adds to
// it (a shell, wget, curl, nc, dig and nslookup, ip, socat, conntrack): the e2e suite
// runs them in its pods with kubectl exec.
var agnhostPackages = []string{"bash", "curl", "wget", "netcat-openbsd", "iproute2", "dnsutils", "socat", "conntrack", "procps", "util-linux", "iputils-ping", "ca-certificates"}

// imageSpec is one image: a Debian root filesystem with packages (none: no root
// filesystem at all) and files laid over it.
type imageSpec struct {
	ref        string
	packages   []string
	files      []imageFile
	entrypoint []string
	cmd        []string
}

type imageFile struct {
	path string // inside the image
	src  string // on this machine
}

// ProxyPackages reads the kproxy image's package list, hack/image-packages.txt, the
// one the Dockerfile installs.
func ProxyPackages(repo string) ([]string, error) {
	f, err := os.Open(filepath.Join(repo, "hack", "image-packages.txt"))
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var pkgs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			pkgs = append(pkgs, line)
		}
	}
	return pkgs, sc.Err()
}

// imageSpecs are the images: pause, CoreDNS (static, alone), agnhost, kproxy (the Dockerfile's content:
// the binary over Debian with the listed packages) and upstream kube-proxy over the
// same root filesystem.
func (c *Cluster) imageSpecs() ([]imageSpec, error) {
	proxyPkgs, err := ProxyPackages(c.cfg.Repo)
	if err != nil {
		return nil, fmt.Errorf("kproxy image packages: %w", err)
	}
	return []imageSpec{
		{ref: PauseImage, files: []imageFile{{"/pause", c.bin("pause")}}, entrypoint: []string{"/pause"}},
		{ref: CoreDNSImage, files: []imageFile{{"/coredns", c.tool("coredns")}}, entrypoint: []string{"/coredns"}},
		{
			ref: AgnhostImage, packages: agnhostPackages,
			files:      []imageFile{{"/agnhost", c.tool("agnhost")}},
			entrypoint: []string{"/agnhost"}, cmd: []string{"pause"},
		},
		{
			ref: KproxyImage, packages: proxyPkgs,
			files:      []imageFile{{"/usr/local/bin/kproxy", c.bin("kproxy")}},
			entrypoint: []string{"/usr/local/bin/kproxy"},
		},
		{ref: DistrolessIptablesImage, packages: proxyPkgs},
		{ref: BusyBoxImage, packages: agnhostPackages, entrypoint: []string{"/bin/sh"}},
		{ref: Issue74839Image, files: []imageFile{{"/regression-issue-74839", c.tool("regression-issue-74839")}}, entrypoint: []string{"/regression-issue-74839"}},
		{
			ref: UpstreamImage, packages: proxyPkgs,
			files:      []imageFile{{"/usr/local/bin/kube-proxy", c.tool("kube-proxy")}},
			entrypoint: []string{"/usr/local/bin/kube-proxy"},
		},
	}, nil
}

// buildImages writes each image as a docker-archive tarball into dir and returns
// their paths. The Debian root filesystems come from rootfs (cached).
func (c *Cluster) buildImages(dir string) ([]string, error) {
	specs, err := c.imageSpecs()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var out []string
	for _, s := range specs {
		start := time.Now()
		path := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(s.ref)+".tar")
		if err := c.buildImage(s, path); err != nil {
			return nil, fmt.Errorf("image %s: %w", s.ref, err)
		}
		c.logf("image %s built in %v", s.ref, time.Since(start).Round(time.Second))
		out = append(out, path)
	}
	return out, nil
}

func (c *Cluster) buildImage(s imageSpec, path string) error {
	var layers []v1.Layer
	if len(s.packages) > 0 {
		fs, err := c.rootfs(s.packages)
		if err != nil {
			return err
		}
		l, err := tarball.LayerFromFile(fs, tarball.WithCompressionLevel(1))
		if err != nil {
			return fmt.Errorf("root filesystem layer: %w", err)
		}
		layers = append(layers, l)
	}
	if len(s.files) > 0 {
		files, err := filesLayer(s.files)
		if err != nil {
			return err
		}
		layers = append(layers, files)
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint, cf.Config.Cmd = s.entrypoint, s.cmd
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	ref, err := name.NewTag(s.ref)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(path, ref, img)
}

// filesLayer is one layer with the given files, each executable, and their parent
// directories.
func filesLayer(files []imageFile) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		for d := filepath.Dir(f.path); d != "/" && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range sortedKeys(dirs) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755}); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f.src)
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.path, "/"), Mode: 0o755, Size: int64(len(b))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }, tarball.WithCompressionLevel(1))
}

// rootfs returns a tarball of a minimal Debian root filesystem with the packages,
// made with mmdebstrap from the Debian archive this machine's apt uses, and cached
// under the cache directory keyed on the suite and the package list.
func (c *Cluster) rootfs(packages []string) (string, error) {
	sum := sha256.Sum256([]byte(DebianSuite + "\n" + strings.Join(packages, "\n")))
	path := filepath.Join(c.cfg.CacheDir, "rootfs", DebianSuite+"-"+hex.EncodeToString(sum[:8])+".tar")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	sources, err := aptSources()
	if err != nil {
		return "", err
	}
	c.logf("root filesystem: Debian %s with %s (mmdebstrap, about a minute) ...", DebianSuite, strings.Join(packages, ","))
	start := time.Now()
	tmp := strings.TrimSuffix(path, ".tar") + ".tmp.tar"
	args := []string{
		"--quiet", "--format=tar", "--variant=minbase", "--include=" + strings.Join(packages, ","),
		// Documentation is of no use in an image.
		"--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
		"--dpkgopt=path-exclude=/usr/share/locale/*",
		DebianSuite, tmp, sources,
	}
	if out, err := exec.Command("mmdebstrap", args...).CombinedOutput(); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("mmdebstrap: %w\n%s", err, lastLines(string(out), 20))
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	c.logf("root filesystem built in %v", time.Since(start).Round(time.Second))
	return path, nil
}

// aptSources is the file naming the Debian archive this machine installs from; the
// images come from the same archive.
func aptSources() (string, error) {
	for _, p := range []string{"/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"} {
		if st, err := os.Stat(p); err == nil && st.Size() > 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("no Debian apt sources on this machine (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)")
}
