package conntrack

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Fill is how full the conntrack table of kproxy's network namespace is. When Entries
// reaches Max the kernel drops the first packet of every new connection ("nf_conntrack:
// table full, dropping packet" in the kernel log): Services look down although every
// rule is in place, which is why kproxy reports it.
type Fill struct {
	Entries, Max int
}

// ReadFill reads nf_conntrack_count (this namespace's entries) and nf_conntrack_max
// (the kernel-wide limit each namespace is held to) under roots.
func ReadFill(roots Roots) (Fill, error) {
	dir := filepath.Join(roots.ProcSys, "net", "netfilter")
	n, err := readInt(filepath.Join(dir, "nf_conntrack_count"))
	if err != nil {
		return Fill{}, fmt.Errorf("conntrack table size: %w", err)
	}
	m, err := readInt(filepath.Join(dir, "nf_conntrack_max"))
	if err != nil {
		return Fill{}, fmt.Errorf("conntrack table limit: %w", err)
	}
	return Fill{Entries: n, Max: m}, nil
}

// The thresholds of FillWatch: it warns at nearFull and says the table recovered
// below drained, so a table hovering at one value does not log at every check.
const (
	nearFull = 0.95
	drained  = 0.90
)

// FillWatch reads the table's fill every Interval and logs, once per episode, when it
// is (nearly) full and when it has drained again. It only reads two small files per
// check, whatever the table holds, so a full table costs kproxy nothing more.
type FillWatch struct {
	Read     func() (Fill, error)
	Clock    clock.WithTicker
	Interval time.Duration

	full    bool // the last check found the table at or above nearFull
	readErr bool // the last read failed (logged once until it works again)
}

// Run checks until ctx ends.
func (w *FillWatch) Run(ctx context.Context) {
	logger := klog.FromContext(ctx)
	t := w.Clock.NewTicker(w.Interval)
	defer t.Stop()
	w.check(logger)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			w.check(logger)
		}
	}
}

func (w *FillWatch) check(logger klog.Logger) {
	f, err := w.Read()
	if err != nil {
		if !w.readErr {
			// No conntrack module loaded (yet): nothing is tracked, nothing to report.
			logger.V(2).Info("Cannot read the conntrack table's fill; will keep trying", "err", err)
		}
		w.readErr = true
		return
	}
	w.readErr = false
	if f.Max <= 0 {
		return
	}
	ratio := float64(f.Entries) / float64(f.Max)
	switch {
	case !w.full && ratio >= nearFull:
		w.full = true
		logger.Error(nil, "The conntrack table is full or nearly: the kernel drops new connections once it is full; raise nf_conntrack_max (--conntrack-max-per-core, --conntrack-min) or find what opens so many connections",
			"entries", f.Entries, "max", f.Max)
	case w.full && ratio < drained:
		w.full = false
		logger.Info("The conntrack table has room again", "entries", f.Entries, "max", f.Max)
	}
}
