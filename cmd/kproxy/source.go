package main

import (
	"context"
	"errors"

	"github.com/kproxy/kproxy/internal/allocator"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/source/manifests"
)

// source delivers Services, EndpointSlices and the Node to the proxy's Handler.
type source interface {
	// Run delivers the initial state, calls Handler.OnSynced, then follows changes
	// until ctx ends.
	Run(ctx context.Context) error
}

// newSource picks the source: the manifests directory when --manifests is given.
func newSource(cfg *config.Config, h model.Handler) (source, error) {
	if cfg.Manifests != "" {
		return manifests.New(manifests.Options{
			Dir:           cfg.Manifests,
			StateDir:      cfg.StateDir,
			NodeName:      cfg.NodeName,
			ServiceCIDRs:  cfg.ServiceClusterIPRanges,
			NodePortRange: allocator.PortRange{Base: cfg.ServiceNodePortRange.Base, Size: cfg.ServiceNodePortRange.Size},
		}, h)
	}
	return nil, errors.New("no source: give --manifests DIR (the Kubernetes API source is not implemented yet)")
}
