// Package apiserver is kproxy's Kubernetes API source: it watches Services,
// EndpointSlices and the proxy's own Node through client-go shared informers and
// feeds them to a model.Handler, like kube-proxy's config package does.
package apiserver

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options configures the source. Zero QPS, Burst and ContentType keep client-go's
// defaults; the config package fills in kube-proxy's (5, 10, protobuf).
type Options struct {
	// Kubeconfig is the kubeconfig file; Master overrides the server URL in it (or is
	// the whole configuration when Kubeconfig is empty). With neither, the in-cluster
	// configuration is used when KUBERNETES_SERVICE_HOST is set.
	Kubeconfig string
	Master     string
	QPS        float32
	Burst      int
	// ContentType is what the client sends and prefers to receive
	// ("application/vnd.kubernetes.protobuf" or "application/json").
	ContentType string
	// ResyncPeriod is the informers' resync (kube-proxy's configSyncPeriod): every
	// cached object is handed to the Handler again, from memory, without API calls.
	ResyncPeriod time.Duration
	// NodeName is the Node whose object is watched (--hostname-override).
	NodeName string
}

// userAgent names kproxy in the API server's logs and audit events.
const userAgent = "kproxy"

// Configured reports whether opts, together with the environment, give the source
// an API server to talk to; cmd/kproxy uses it to pick between sources.
func Configured(opts Options) bool {
	return opts.Kubeconfig != "" || opts.Master != "" || inCluster()
}

// inCluster mirrors rest.InClusterConfig's own test for the environment of a pod.
func inCluster() bool {
	return os.Getenv("KUBERNETES_SERVICE_HOST") != "" && os.Getenv("KUBERNETES_SERVICE_PORT") != ""
}

// restConfig builds the client configuration from the options.
func restConfig(opts Options) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	switch {
	case opts.Kubeconfig != "" || opts.Master != "":
		cfg, err = clientcmd.BuildConfigFromFlags(opts.Master, opts.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("API client from --kubeconfig %q --master %q: %w", opts.Kubeconfig, opts.Master, err)
		}
	case inCluster():
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("API client from the in-cluster service account: %w", err)
		}
	default:
		return nil, errors.New("no API server: give --kubeconfig or --master, or run in a pod (KUBERNETES_SERVICE_HOST unset)")
	}
	if opts.QPS != 0 {
		cfg.QPS = opts.QPS
	}
	if opts.Burst != 0 {
		cfg.Burst = opts.Burst
	}
	if opts.ContentType != "" {
		cfg.ContentType = opts.ContentType
		// Ask for the same type, with JSON as the fallback for the built-in types
		// that have no protobuf encoding.
		cfg.AcceptContentTypes = opts.ContentType
		if opts.ContentType != "application/json" {
			cfg.AcceptContentTypes += ",application/json"
		}
	}
	cfg.UserAgent = fmt.Sprintf("%s (%s/%s)", userAgent, runtime.GOOS, runtime.GOARCH)
	return cfg, nil
}

// NewClient returns the clientset for opts and its server's URL. cmd/kproxy makes it
// before the Source, to record Events with the same client.
func NewClient(opts Options) (kubernetes.Interface, string, error) {
	cfg, err := restConfig(opts)
	if err != nil {
		return nil, "", err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("API client for %s: %w", cfg.Host, err)
	}
	return client, cfg.Host, nil
}
