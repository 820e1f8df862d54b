package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kproxy/kproxy/test/proc"
)

// Logger is where progress goes; *testing.T satisfies it.
type Logger interface {
	Logf(format string, args ...any)
}

// The cluster-wide settings of the test API server; test/e2e's namespace cluster
// uses the same Service range.
const (
	ServiceCIDR   = "10.96.0.0/16"
	NodePortRange = "30000-32767"
)

// Options configures Start.
type Options struct {
	// BinDir holds kube-apiserver and etcd; default FindBinaries().
	BinDir string
	// Address is the IPv4 address kube-apiserver listens on and kubeconfigs name;
	// it must already exist on this host. Default 127.0.0.1. etcd always stays on
	// 127.0.0.1.
	Address string
	// WorkDir holds data, certificates and logs; default a new temp dir that Close
	// removes.
	WorkDir string
	Log     Logger
	// ReadyTimeout bounds each wait for /readyz; default 2 minutes (a first start
	// on a small machine takes a while).
	ReadyTimeout time.Duration
	// ExtraArgs are appended to kube-apiserver's flags (an audit log and policy, ...).
	ExtraArgs []string
}

// Server is a running etcd and kube-apiserver.
type Server struct {
	// URL is https://Address:port.
	URL string
	// KubeconfigPath is an admin (system:masters) kubeconfig for URL.
	KubeconfigPath string
	// Config and Client are the admin's.
	Config *rest.Config
	Client kubernetes.Interface
	// WorkDir holds the logs (etcd.log, kube-apiserver.log).
	WorkDir string

	opts       Options
	creds      *credentials
	apiArgs    []string
	removeWork bool

	mu        sync.Mutex
	etcd      *proc.Process
	apiserver *proc.Process
}

// Start runs etcd and kube-apiserver and waits until the API server is ready. On
// error nothing it started is left running.
func Start(opts Options) (*Server, error) {
	if opts.Address == "" {
		opts.Address = "127.0.0.1"
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 2 * time.Minute
	}
	if opts.BinDir == "" {
		dir, err := FindBinaries()
		if err != nil {
			return nil, err
		}
		opts.BinDir = dir
	} else if err := checkBinaries(opts.BinDir); err != nil {
		return nil, err
	}
	ip := net.ParseIP(opts.Address).To4()
	if ip == nil {
		return nil, fmt.Errorf("test API server: Address %q is not an IPv4 address", opts.Address)
	}
	s := &Server{opts: opts}
	if opts.WorkDir == "" {
		dir, err := os.MkdirTemp("", "kproxy-apiserver-")
		if err != nil {
			return nil, err
		}
		s.WorkDir, s.removeWork = dir, true
	} else {
		s.WorkDir = opts.WorkDir
	}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	certDir := filepath.Join(s.WorkDir, "pki")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	creds, err := generateCredentials(certDir, []net.IP{net.IPv4(127, 0, 0, 1), ip, net.IPv4(10, 96, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("test API server credentials: %w", err)
	}
	s.creds = creds

	etcdURL, err := s.startEtcd()
	if err != nil {
		return nil, err
	}
	port, err := freePort(opts.Address)
	if err != nil {
		return nil, err
	}
	s.URL = "https://" + hostPort(opts.Address, port)
	s.apiArgs = []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + opts.Address,
		"--advertise-address=" + opts.Address,
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + certDir,
		"--tls-cert-file=" + creds.certFile,
		"--tls-private-key-file=" + creds.keyFile,
		"--token-auth-file=" + creds.tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + creds.saPubFile,
		"--service-account-signing-key-file=" + creds.saKeyFile,
		// The advertised address is not reachable from a real pod network; nothing
		// should maintain the kubernetes Service's endpoints.
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--service-node-port-range=" + NodePortRange,
		// The DaemonSet in deploy/ is privileged, like kube-proxy's.
		"--allow-privileged=true",
		"--profiling=false",
	}
	s.apiArgs = append(s.apiArgs, opts.ExtraArgs...)
	if err := s.startAPIServer(); err != nil {
		return nil, err
	}
	if err := s.writeAdminKubeconfig(); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Log != nil {
		s.opts.Log.Logf(format, args...)
	}
}

func (s *Server) startEtcd() (string, error) {
	clientPort, err := freePort("127.0.0.1")
	if err != nil {
		return "", err
	}
	peerPort, err := freePort("127.0.0.1")
	if err != nil {
		return "", err
	}
	clientURL := "http://" + hostPort("127.0.0.1", clientPort)
	peerURL := "http://" + hostPort("127.0.0.1", peerPort)
	p, err := proc.Start("etcd", filepath.Join(s.WorkDir, "etcd.log"), exec.Command(filepath.Join(s.opts.BinDir, "etcd"),
		"--name=test",
		"--data-dir="+filepath.Join(s.WorkDir, "etcd-data"),
		"--listen-client-urls="+clientURL,
		"--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=test="+peerURL,
		// Test data need not survive a power cut; fsync would dominate on slow disks.
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	))
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.etcd = p
	s.mu.Unlock()
	s.logf("apiserver: etcd started (pid %d) on %s, log %s", p.Pid(), clientURL, p.LogPath)
	err = waitHTTP(p, http.DefaultClient, clientURL+"/health", "", 30*time.Second)
	if err != nil {
		return "", fmt.Errorf("etcd: %w\nlog tail:\n%s", err, p.LogTail(30))
	}
	return clientURL, nil
}

func (s *Server) startAPIServer() error {
	p, err := proc.Start("kube-apiserver", filepath.Join(s.WorkDir, "kube-apiserver.log"),
		exec.Command(filepath.Join(s.opts.BinDir, "kube-apiserver"), s.apiArgs...))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.apiserver = p
	s.mu.Unlock()
	start := time.Now()
	if err := waitHTTP(p, s.httpClient(), s.URL+"/readyz", s.creds.adminToken, s.opts.ReadyTimeout); err != nil {
		return fmt.Errorf("kube-apiserver: %w\nlog tail:\n%s", err, p.LogTail(40))
	}
	s.logf("apiserver: kube-apiserver (pid %d) ready on %s after %v", p.Pid(), s.URL, time.Since(start).Round(time.Millisecond))
	return nil
}

func (s *Server) httpClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.creds.caPEM)
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
}

// waitHTTP polls url until it answers 200, the process exits, or timeout passes.
func waitHTTP(p *proc.Process, client *http.Client, url, token string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		if !p.Running() {
			if err := p.Err(); err != nil {
				return fmt.Errorf("%s exited before %s was ready: %w", p.Name, url, err)
			}
			return fmt.Errorf("%s exited before %s was ready", p.Name, url)
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v: %s", url, timeout, last)
}

// Stop stops the kube-apiserver (SIGTERM to its PID) and leaves etcd running, so
// Restart brings the same cluster state back.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.apiserver
	s.mu.Unlock()
	if p != nil && p.Running() {
		p.Stop(stopGrace)
		s.logf("apiserver: kube-apiserver (pid %d) stopped", p.Pid())
	}
}

// Restart starts the kube-apiserver again with the same flags and port, and waits
// until it is ready.
func (s *Server) Restart() error {
	s.Stop()
	return s.startAPIServer()
}

// Running reports whether the kube-apiserver process is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiserver != nil && s.apiserver.Running()
}

// Close stops the kube-apiserver and etcd and removes the work dir if Start made it.
// Safe to call more than once.
func (s *Server) Close() { s.close(false) }

// CloseKeepLogs is Close without removing the work dir, so that the logs of a
// failed test survive.
func (s *Server) CloseKeepLogs() { s.close(true) }

func (s *Server) close(keep bool) {
	s.mu.Lock()
	api, etcd := s.apiserver, s.etcd
	s.apiserver, s.etcd = nil, nil
	s.mu.Unlock()
	if api != nil {
		api.Stop(stopGrace)
	}
	if etcd != nil {
		etcd.Stop(stopGrace)
	}
	if s.removeWork && !keep {
		_ = os.RemoveAll(s.WorkDir)
	} else if s.WorkDir != "" && (api != nil || etcd != nil) {
		s.logf("apiserver: logs kept in %s", s.WorkDir)
	}
}

// APIServerLog returns the last n lines of the kube-apiserver's log.
func (s *Server) APIServerLog(n int) string {
	s.mu.Lock()
	p := s.apiserver
	s.mu.Unlock()
	if p == nil {
		return lastLines(readFile(filepath.Join(s.WorkDir, "kube-apiserver.log")), n)
	}
	return p.LogTail(n)
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// WriteKubeconfig writes a kubeconfig for the bearer token to path, naming the API
// server by URL.
func (s *Server) WriteKubeconfig(path, token string) error {
	return WriteKubeconfig(path, s.URL, s.creds.caPEM, token)
}

// CAPEM is the CA that signed the API server's serving certificate, for a client
// (or a proxy in front of the server) that must verify it.
func (s *Server) CAPEM() []byte { return s.creds.caPEM }

// WriteKubeconfig writes a kubeconfig for the bearer token to path that names the
// server at url, whose certificate caPEM signed: the test API server, or a proxy in
// front of it.
func WriteKubeconfig(path, url string, caPEM []byte, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: url, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "user"}
	cfg.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return nil
}

func (s *Server) writeAdminKubeconfig() error {
	s.KubeconfigPath = filepath.Join(s.WorkDir, "admin.kubeconfig")
	if err := s.WriteKubeconfig(s.KubeconfigPath, s.creds.adminToken); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", s.KubeconfigPath)
	if err != nil {
		return err
	}
	// Tests create objects in bursts; the default 5 QPS would slow them down and
	// distort latency measurements.
	cfg.QPS, cfg.Burst = 1000, 1000
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	s.Config, s.Client = cfg, client
	return nil
}

// WaitReady waits until the kube-apiserver answers /readyz (after a Restart from
// another goroutine, for example).
func (s *Server) WaitReady(ctx context.Context) error {
	client := s.httpClient()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+s.creds.adminToken)
		resp, err := client.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
