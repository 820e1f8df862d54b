package conntrack

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// Cleaner deletes stale UDP and SCTP conntrack entries after a sync. It keeps one
// ctnetlink socket open between calls; Clean calls are serialised.
type Cleaner struct {
	mu    sync.Mutex
	table table
}

// NewCleaner returns a Cleaner for the network namespace of the thread that first
// calls Clean: in production, the host namespace kproxy runs in.
func NewCleaner() *Cleaner {
	return &Cleaner{table: table{ns: netns.None()}}
}

// NewCleanerIn returns a Cleaner for the given network namespace. The caller keeps
// ns open for as long as the Cleaner is used.
func NewCleanerIn(ns netns.NsHandle) *Cleaner {
	return &Cleaner{table: table{ns: ns}}
}

// Close releases the Cleaner's netlink socket; a later Clean opens a new one.
func (c *Cleaner) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.table.reset()
}

// Clean deletes the family's conntrack entries that match a target but whose reply
// source is not among the target's kept endpoints, and returns how many it deleted.
// The table is listed once whatever the number of targets. On an error the count
// is still that of the entries actually deleted; an error wrapping
// netlink.ErrDumpInterrupted means the table changed while it was listed and some
// stale entries may have been missed. It logs to ctx's logger.
func (c *Cleaner) Clean(ctx context.Context, family model.Family, targets []Target) (int, error) {
	matcher, err := newFlowMatcher(family, targets)
	if err != nil {
		return 0, err
	}
	if matcher.empty() {
		return 0, nil
	}
	af := uint8(unix.AF_INET)
	if family == model.IPv6 {
		af = unix.AF_INET6
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	start := time.Now()
	// A failed listing yields no stale entries; an interrupted one yields those seen.
	stale, seen, listErr := c.table.collect(af, matcher.MatchConntrackFlow)
	deleted, delErr := c.table.remove(af, stale)
	klog.FromContext(ctx).V(2).Info("Cleaned stale conntrack entries", "family", family, "targets", len(targets),
		"entries", seen, "stale", len(stale), "deleted", deleted, "elapsed", time.Since(start))
	if listErr != nil || delErr != nil {
		return deleted, fmt.Errorf("conntrack cleanup (%s): %w", family, joinErrs(listErr, delErr))
	}
	return deleted, nil
}

// joinErrs joins the non-nil errors, returning the single one unwrapped.
func joinErrs(a, b error) error {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return fmt.Errorf("%w; %w", a, b)
}
