package scale

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kproxy/kproxy/test/apiserver"
	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// env is everything the runs share: binaries, the namespace cluster with its sink,
// the API server and the Services in it.
type env struct {
	cfg         Config
	repo        string
	workDir     string
	kproxyBin   string
	echoBin     string
	upstreamBin string

	c      *cluster.Cluster
	srv    *apiserver.Server
	client kubernetes.Interface
	sink   *sink
	kernel kernel
	prober *nsThread // in pod-a1: every measured connection starts there

	svcs    []*service // index i is serviceName(i); nil until created
	markers int        // marker addresses handed out so far
	// cleanupProblems are failures of "kproxy --cleanup" between runs, for the report.
	cleanupProblems []string
	closers         []func()
}

type logAdapter struct{ cfg Config }

func (l logAdapter) Logf(format string, args ...any) { l.cfg.logf(format, args...) }

// setup builds the binaries, the cluster, the sink and the API server, and creates
// the namespace and Node objects. On error everything made so far is removed.
func setup(cfg Config) (e *env, err error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("bench: must run as root (network namespaces, iptables, nftables)")
	}
	e = &env{cfg: cfg}
	defer func() {
		if err != nil {
			e.close(true)
		}
	}()
	if e.repo, err = cluster.RepoRoot(); err != nil {
		return nil, err
	}
	if e.workDir, err = os.MkdirTemp("", "kproxy-bench-"); err != nil {
		return nil, err
	}
	binDir := filepath.Join(e.workDir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, err
	}
	cfg.logf("bench: building kproxy and echoserver into %s", binDir)
	if e.kproxyBin, err = cluster.GoBuild(e.repo, "./cmd/kproxy", binDir); err != nil {
		return nil, err
	}
	if e.echoBin, err = cluster.GoBuild(e.repo, "./test/echoserver", binDir); err != nil {
		return nil, err
	}
	tools, err := apiserver.FindBinaries()
	if errors.Is(err, apiserver.ErrNoToolsDir) {
		cfg.logf("bench: tools (etcd, kube-apiserver, upstream kube-proxy) from hack/build-tools.sh")
		tools, err = apiserver.BuildBinaries(cfg.logf)
	}
	if err != nil {
		return nil, err
	}
	e.upstreamBin = filepath.Join(tools, "kube-proxy")
	if _, err := os.Stat(e.upstreamBin); err != nil {
		return nil, fmt.Errorf("bench: upstream kube-proxy: %w (hack/build-tools.sh builds it)", err)
	}

	log := logAdapter{cfg}
	cluster.RemoveLeftovers(log)
	e.c, err = cluster.New(log, cluster.Options{
		KproxyBin: e.kproxyBin, EchoBin: e.echoBin, WorkDir: filepath.Join(e.workDir, "cluster"),
	})
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.c.Close)
	e.kernel = kernel{exec: func(args ...string) (string, error) { return e.c.Exec(cluster.KproxyNode, args...) }}
	if e.sink, err = newSink(e.c); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.sink.Close)
	if e.prober, err = enterNS(e.c.NS("pod-a1")); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.prober.Close)
	hostIP, removeLink, err := linkAPI(e.c)
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, removeLink)

	e.srv, err = apiserver.Start(apiserver.Options{
		BinDir: tools, Address: hostIP, Log: log, WorkDir: filepath.Join(e.workDir, "apiserver"),
	})
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.srv.Close)
	// Loading ten thousand Services wants many requests in flight.
	rc := rest.CopyConfig(e.srv.Config)
	rc.QPS, rc.Burst = 5000, 5000
	if e.client, err = kubernetes.NewForConfig(rc); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := createClusterObjects(ctx, e.client); err != nil {
		return nil, err
	}
	e.svcs = make([]*service, cfg.Services)
	return e, nil
}

// close tears everything down in reverse order; keep leaves the work dir (logs).
func (e *env) close(keep bool) {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	e.closers = nil
	if e.workDir == "" {
		return
	}
	if keep {
		e.cfg.logf("bench: logs kept in %s", e.workDir)
		return
	}
	_ = os.RemoveAll(e.workDir)
}

// ipSet is the ClusterIPs of the first n Services.
func (e *env) ipSet(n int) map[string]bool {
	ips := make(map[string]bool, n)
	for _, s := range e.svcs[:n] {
		ips[s.ClusterIP] = true
	}
	return ips
}

func (e *env) serviceByIP(ip string) *service {
	for _, s := range e.svcs {
		if s != nil && s.ClusterIP == ip {
			return s
		}
	}
	return nil
}

// nextMarker hands out a sink address not used by any initial endpoint; the answer
// "sink-<address>" then proves the proxy programmed the change that introduced it.
func (e *env) nextMarker() string {
	a := nthAddr(markerBase, e.markers%markerCount)
	e.markers++
	return a
}
