// Package manifests is kproxy's standalone source: it reads ordinary Kubernetes YAML
// and JSON from a directory and feeds the Services, EndpointSlices and the local Node
// in it to a model.Handler the way an informer would, allocating ClusterIPs and
// NodePorts like the API server. The directory is watched; edits show within a second.
package manifests

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/allocator"
	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/model"
)

// Options configures a Source.
type Options struct {
	// Dir holds the manifests; StateDir the persisted allocations (empty: allocations
	// last only as long as the process).
	Dir, StateDir string
	// NodeName is the node whose v1 Node object is passed to OnNodeUpsert.
	NodeName string
	// ServiceCIDRs are the ranges ClusterIPs come from, at most one per family; the
	// first one's family is the default for single-stack Services.
	ServiceCIDRs []netip.Prefix
	// NodePortRange is where nodePorts come from; zero means 30000-32767.
	NodePortRange config.PortRange
}

const (
	// debounce is how long after the first event of a burst the directory is read:
	// editors write through temp files and renames, which come as several events.
	debounce = 150 * time.Millisecond
	// rescanInterval is the safety net for changes the watches missed (an overflow, a
	// symlink target's directory that could not be watched).
	rescanInterval = 10 * time.Second
	// retryInterval is how soon a pass is repeated when the directory is missing (a
	// stat), and the first delay before a pass retries allocations that could not be
	// saved; that delay doubles up to rescanInterval while saving keeps failing, as
	// each retry reconciles every object.
	retryInterval = time.Second
	// settleDelay is how long the listing of a recreated directory must stay the same
	// before it is read.
	settleDelay = 500 * time.Millisecond
)

// Source is the manifests directory source. Create it with New, then call Run.
type Source struct {
	opts  Options
	h     model.Handler
	alloc *allocator.Allocator

	// Only Run's goroutine touches these.
	files     map[string]*fileState     // by file name within Dir
	delivered map[objKey]runtime.Object // what the handler has now
	from      map[objKey]string         // the file each delivered object came from
	logged    map[string]string         // problem id -> message already logged
	dirGone   bool                      // the directory is missing; logged once
	links     map[string]string         // symlink name -> target directory outside Dir
	// saveBackoff is the current delay of retries of allocations not saved.
	saveBackoff time.Duration
	// settling: the directory was replaced, and is read once it holds a manifest and
	// its listing (settled) has not changed since settledAt for settleDelay.
	settling  bool
	settled   map[string]fileStat
	settledAt time.Time

	mu       sync.Mutex
	problems []error
}

// New checks the options and opens (and locks) the allocation state.
func New(opts Options, h model.Handler) (*Source, error) {
	fi, err := os.Stat(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("manifests directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("manifests directory %s is not a directory", opts.Dir)
	}
	if len(opts.ServiceCIDRs) == 0 {
		return nil, fmt.Errorf("manifests source: at least one service CIDR is required")
	}
	if len(opts.ServiceCIDRs) > 2 || (len(opts.ServiceCIDRs) == 2 && opts.ServiceCIDRs[0].Addr().Is4() == opts.ServiceCIDRs[1].Addr().Is4()) {
		return nil, fmt.Errorf("manifests source: service CIDRs %v: at most one per IP family", opts.ServiceCIDRs)
	}
	if opts.NodePortRange == (config.PortRange{}) {
		opts.NodePortRange = allocator.DefaultNodePortRange
	}
	if opts.StateDir == "" {
		klog.InfoS("No state directory: ClusterIP and NodePort allocations will not survive a restart", "dir", opts.Dir)
	}
	alloc, err := allocator.Open(opts.StateDir, opts.ServiceCIDRs, opts.NodePortRange)
	if err != nil {
		return nil, err
	}
	return &Source{
		opts:      opts,
		h:         h,
		alloc:     alloc,
		files:     map[string]*fileState{},
		delivered: map[objKey]runtime.Object{},
		from:      map[objKey]string{},
		logged:    map[string]string{},
	}, nil
}

// Close releases the state directory. Run calls it when it returns.
func (s *Source) Close() error { return s.alloc.Close() }

// Errors returns the current problems: one per file that does not parse and per
// object that is rejected.
func (s *Source) Errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.problems)
}

// Run loads Dir, calls OnSynced after the first complete load, then follows changes
// until ctx ends. It returns an error only when the directory cannot be read or
// watched at start: later, a directory that is removed is a source that is
// unavailable, not one without objects. Everything delivered stays until the
// directory is back, and the directory then at the path is watched again. It logs to
// ctx's logger.
func (s *Source) Run(ctx context.Context) error {
	defer func() { _ = s.Close() }()
	logger := klog.FromContext(ctx)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching manifests directory %s: %w", s.opts.Dir, err)
	}
	defer func() { _ = w.Close() }()
	dw := newDirWatch(s.opts.Dir, w)
	// Watch before the first read, so a change during it is not missed.
	if _, err := dw.ensure(); err != nil {
		return err
	}
	if err := s.scan(nil); err != nil {
		return err
	}
	again := s.retryAfter(s.reconcile())
	dw.follow(logger, s.targetDirs())
	s.h.OnSynced()

	ticker := time.NewTicker(rescanInterval)
	defer ticker.Stop()
	pending := map[string]bool{}
	// fire ends the debounce of a burst of events; retry repeats a pass that asked for
	// it. Apart, so that a long retry delay never holds up an edit.
	var fire, retry <-chan time.Time
	schedule := func(again time.Duration) {
		retry = nil
		if again > 0 {
			retry = time.After(again)
		}
	}
	schedule(again)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watch on manifests directory %s ended", s.opts.Dir)
			}
			if d := filepath.Dir(ev.Name); ev.Name != dw.dir && d != dw.dir {
				// In a directory symlinks point into: re-read the links into it.
				for name, td := range s.links {
					if td == d {
						pending[name] = true
					}
				}
			} else {
				pending[filepath.Base(ev.Name)] = true
			}
			if fire == nil {
				fire = time.After(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("watch on manifests directory %s ended", s.opts.Dir)
			}
			// An overflow loses events; the stat comparison of a full pass finds them.
			logger.Error(err, "Watching the manifests directory", "dir", s.opts.Dir)
			if fire == nil {
				fire = time.After(debounce)
			}
		case <-fire:
			fire = nil
			schedule(s.pass(logger, dw, pending))
			pending = map[string]bool{}
		case <-retry:
			schedule(s.pass(logger, dw, nil))
		case <-ticker.C:
			schedule(s.pass(logger, dw, nil))
		}
	}
}

// pass reads what changed and delivers the differences. It returns how soon it
// should be repeated (0: at the next event or rescan): the directory is missing, or
// allocations could not be saved.
func (s *Source) pass(logger klog.Logger, dw *dirWatch, force map[string]bool) (again time.Duration) {
	start := time.Now()
	renewed, err := dw.ensure()
	if err != nil {
		if !s.dirGone {
			logger.Error(err, "The manifests directory is unavailable; keeping every object delivered so far until it is back",
				"dir", s.opts.Dir, "objects", len(s.delivered))
			s.dirGone = true
		}
		return retryInterval
	}
	if renewed {
		// A directory seen for the first time: every file in it is read again.
		logger.Info("Watching the manifests directory again", "dir", s.opts.Dir)
		force = nil
		for _, f := range s.files {
			f.stat = fileStat{}
		}
		s.settling, s.settled = len(s.delivered) > 0, nil
	}
	s.dirGone = false
	if s.settling {
		// A recreated directory is one being filled (mkdir, then a copy file by
		// file): read empty or half filled, it would unprogram the Services of the
		// files not there yet. It is read once it has manifests and has settled.
		snap, err := listing(s.opts.Dir)
		if err != nil || len(snap) == 0 || !maps.Equal(snap, s.settled) {
			logger.V(2).Info("Waiting for the recreated manifests directory to settle; keeping the objects delivered so far",
				"dir", s.opts.Dir, "manifests", len(snap), "err", err)
			s.settled, s.settledAt = snap, time.Now()
			if len(snap) == 0 {
				return 0 // the watch tells when files arrive
			}
			return settleDelay
		}
		if quiet := time.Since(s.settledAt); quiet < settleDelay {
			return settleDelay - quiet
		}
		s.settling, s.settled = false, nil
	}
	if err := s.scan(force); err != nil {
		logger.Error(err, "Reading the manifests directory; keeping the objects delivered so far", "dir", s.opts.Dir)
		return retryInterval
	}
	again = s.retryAfter(s.reconcile())
	dw.follow(logger, s.targetDirs())
	if took := time.Since(start); took > time.Second {
		logger.Info("Reading the manifests directory was slow", "dir", s.opts.Dir, "changedFiles", len(force), "took", took)
	} else {
		logger.V(4).Info("Read the manifests directory", "dir", s.opts.Dir, "changedFiles", len(force), "took", took)
	}
	return again
}

// retryAfter is the delay before allocations that could not be saved are tried again
// (0 once they were saved): retryInterval, doubling while saving keeps failing.
func (s *Source) retryAfter(saveFailed bool) time.Duration {
	if !saveFailed {
		s.saveBackoff = 0
		return 0
	}
	s.saveBackoff = min(max(2*s.saveBackoff, retryInterval), rescanInterval)
	return s.saveBackoff
}
