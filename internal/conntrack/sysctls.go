package conntrack

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/sysctl"
)

// Sysctls are the conntrack settings applied at startup. Zero values leave the
// kernel's setting alone.
type Sysctls struct {
	// nf_conntrack_max becomes max(MaxPerCore × online CPUs, Min), capped at
	// maxConntrackMax, and is only ever raised. MaxPerCore 0 leaves it alone.
	MaxPerCore int
	Min        int
	// TCP timeouts are written in whole seconds.
	TCPEstablishedTimeout time.Duration
	TCPCloseWaitTimeout   time.Duration
	UDPTimeout            time.Duration
	UDPStreamTimeout      time.Duration
	// TCPBeLiberal sets nf_conntrack_tcp_be_liberal=1 (it is never cleared).
	TCPBeLiberal bool
}

// maxConntrackMax caps nf_conntrack_max however many CPUs the node has.
const maxConntrackMax = 1 << 20

// Roots locates the kernel's tunables, so tests can point them at a temporary
// directory.
type Roots struct {
	ProcSys string // normally /proc/sys
	Sys     string // normally /sys
}

// SetSysctlsAt applies cfg under the given roots. A tunable that is absent or
// read-only (common inside a network namespace or a container with a read-only
// /proc/sys or /sys) is logged and skipped; other failures are returned, joined.
func SetSysctlsAt(roots Roots, cfg Sysctls) error {
	var errs []error
	if cfg.MaxPerCore > 0 {
		want := min(max(cfg.MaxPerCore*onlineCPUs(roots), cfg.Min), maxConntrackMax)
		if err := raiseConntrackMax(roots, want); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range []struct {
		name  string
		value time.Duration
	}{
		{"net/netfilter/nf_conntrack_tcp_timeout_established", cfg.TCPEstablishedTimeout},
		{"net/netfilter/nf_conntrack_tcp_timeout_close_wait", cfg.TCPCloseWaitTimeout},
		{"net/netfilter/nf_conntrack_udp_timeout", cfg.UDPTimeout},
		{"net/netfilter/nf_conntrack_udp_timeout_stream", cfg.UDPStreamTimeout},
	} {
		if s.value <= 0 {
			continue
		}
		if err := setInt(filepath.Join(roots.ProcSys, s.name), int(s.value/time.Second)); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.TCPBeLiberal {
		if err := setInt(filepath.Join(roots.ProcSys, "net/netfilter/nf_conntrack_tcp_be_liberal"), 1); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// raiseConntrackMax raises nf_conntrack_max to want if it is lower, then the hash
// table size to want/4 if that is lower, so lookups stay short as the table grows.
func raiseConntrackMax(roots Roots, want int) error {
	maxPath := filepath.Join(roots.ProcSys, "net/netfilter/nf_conntrack_max")
	if err := raiseInt(maxPath, want); err != nil {
		return err
	}
	return raiseInt(filepath.Join(roots.Sys, "module/nf_conntrack/parameters/hashsize"), want/4)
}

// raiseInt writes want to path unless the current value is already at least want.
func raiseInt(path string, want int) error {
	cur, err := readInt(path)
	if err != nil {
		return skipUnwritable(path, err)
	}
	if cur >= want {
		klog.V(2).InfoS("Kernel setting already high enough", "path", path, "current", cur, "wanted", want)
		return nil
	}
	return writeInt(path, cur, want)
}

// setInt writes want to path unless it already holds that value.
func setInt(path string, want int) error {
	cur, err := readInt(path)
	if err != nil {
		return skipUnwritable(path, err)
	}
	if cur == want {
		return nil
	}
	return writeInt(path, cur, want)
}

func readInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("kernel setting %s: unexpected content %q", path, strings.TrimSpace(string(b)))
	}
	return v, nil
}

// writeInt changes path from cur to v. A tunable that may not be changed here is
// skipped, but said at the default verbosity: unlike an absent one, it means the
// node runs with a value the configuration asked to change (a container without
// the host's /proc/sys/net mounted read-write, /sys read-only for the hash size).
func writeInt(path string, cur, v int) error {
	if err := os.WriteFile(path, []byte(strconv.Itoa(v)), 0o644); err != nil {
		if sysctl.Unwritable(err) {
			klog.InfoS("Cannot change a kernel setting here; it keeps its current value", "path", path, "current", cur, "wanted", v, "err", err)
			return nil
		}
		return skipUnwritable(path, err)
	}
	klog.V(2).InfoS("Set kernel setting", "path", path, "value", v)
	return nil
}

// skipUnwritable swallows the errors of a tunable that is absent or read-only here
// (after logging them) and returns any other error, naming the path.
func skipUnwritable(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || sysctl.Unwritable(err) {
		klog.V(2).InfoS("Skipping kernel setting that cannot be changed here", "path", path, "err", err)
		return nil
	}
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		return err // already names the path
	}
	return fmt.Errorf("kernel setting %s: %w", path, err)
}

// onlineCPUs counts the CPUs listed in sysfs (for example "0-3,6"), which unlike
// runtime.NumCPU ignores this process's CPU affinity; it falls back to
// runtime.NumCPU when the file cannot be read.
func onlineCPUs(roots Roots) int {
	b, err := os.ReadFile(filepath.Join(roots.Sys, "devices/system/cpu/online"))
	if err != nil {
		return runtime.NumCPU()
	}
	n, err := countCPUList(strings.TrimSpace(string(b)))
	if err != nil || n == 0 {
		klog.V(2).InfoS("Cannot parse online CPU list, using runtime.NumCPU", "list", string(b), "err", err)
		return runtime.NumCPU()
	}
	return n
}

// countCPUList counts the CPUs in a kernel CPU list such as "0-3,6,8-9".
func countCPUList(list string) (int, error) {
	n := 0
	for part := range strings.SplitSeq(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("cpu list %q: %w", list, err)
		}
		last := first
		if isRange {
			if last, err = strconv.Atoi(hi); err != nil {
				return 0, fmt.Errorf("cpu list %q: %w", list, err)
			}
		}
		if last < first {
			return 0, fmt.Errorf("cpu list %q: range %s is reversed", list, part)
		}
		n += last - first + 1
	}
	return n, nil
}
