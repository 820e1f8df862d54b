package main

import (
	"context"
	"errors"

	"github.com/kproxy/kproxy/internal/config"
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

// newSource picks the source: the manifests directory when --manifests is given;
// otherwise the API server named by --kubeconfig / --master, or the in-cluster one
// when kproxy runs in a pod.
func newSource(cfg *config.Config, h model.Handler) (source, error) {
	if cfg.Manifests != "" {
		return manifests.New(manifests.Options{
			Dir:           cfg.Manifests,
			StateDir:      cfg.StateDir,
			NodeName:      cfg.NodeName,
			ServiceCIDRs:  cfg.ServiceClusterIPRanges,
			NodePortRange: cfg.ServiceNodePortRange,
		}, h)
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
	if apiserver.Configured(opts) {
		return apiserver.New(opts, h)
	}
	return nil, errors.New("no source: give --manifests DIR for standalone mode, or --kubeconfig / --master for a Kubernetes API server (in a pod, the in-cluster configuration is used)")
}
