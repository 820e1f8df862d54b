package main

import (
	"context"
	"errors"

	"k8s.io/client-go/kubernetes"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/events"
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/source/apiserver"
	"github.com/kproxy/kproxy/internal/source/manifests"
)

// source delivers Services, EndpointSlices and the Node to the proxy's Handler.
type source interface {
	// Run delivers the initial state, calls Handler.OnSynced, then follows changes
	// until ctx ends.
	Run(ctx context.Context) error
}

// apiClient is the API server kproxy watches: nil with --manifests.
type apiClient struct {
	client kubernetes.Interface
	host   string
	opts   apiserver.Options
}

// newAPIClient picks the source: the manifests directory when --manifests is given
// (nil); otherwise the API server named by --kubeconfig / --master, or the in-cluster
// one when kproxy runs in a pod.
func newAPIClient(cfg *config.Config) (*apiClient, error) {
	if cfg.Manifests != "" {
		return nil, nil
	}
	opts := apiserver.Options{
		Kubeconfig:   cfg.Kubeconfig,
		Master:       cfg.Master,
		QPS:          cfg.QPS,
		Burst:        cfg.Burst,
		ContentType:  cfg.ContentType,
		ResyncPeriod: cfg.ConfigSyncPeriod,
		NodeName:     cfg.NodeName,
	}
	if !apiserver.Configured(opts) {
		return nil, errors.New("no source: give --manifests DIR for standalone mode, or --kubeconfig / --master for a Kubernetes API server (in a pod, the in-cluster configuration is used)")
	}
	client, host, err := apiserver.NewClient(opts)
	if err != nil {
		return nil, err
	}
	return &apiClient{client: client, host: host, opts: opts}, nil
}

// newRecorder records Events through the API server until ctx ends; with the
// manifests source (api nil) there is nowhere to write them, and the nil Recorder
// records nothing (every problem is logged all the same).
func newRecorder(ctx context.Context, api *apiClient) (*events.Recorder, error) {
	if api == nil {
		return nil, nil
	}
	return events.NewAPI(ctx, api.client)
}

// newSource returns the source that feeds h: the API server's when api is set, else
// the manifests directory's.
func newSource(cfg *config.Config, api *apiClient, h model.Handler) (source, error) {
	if api != nil {
		return apiserver.NewWithClient(api.opts, api.client, api.host, h)
	}
	return manifests.New(manifests.Options{
		Dir:           cfg.Manifests,
		StateDir:      cfg.StateDir,
		NodeName:      cfg.NodeName,
		ServiceCIDRs:  cfg.ServiceClusterIPRanges,
		NodePortRange: cfg.ServiceNodePortRange,
	}, h)
}
