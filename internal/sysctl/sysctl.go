// Package sysctl writes kernel tunables. Backends take a Writer rather than writing
// /proc/sys themselves, so their tests never touch the host's kernel.
package sysctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Writer sets a sysctl given its path below /proc/sys ("net/ipv4/vs/conntrack").
type Writer func(path, value string) error

// Dir is where the sysctls are: /proc/sys on a node, or where a container that may
// not write its own /proc/sys (the runtime mounts it read-only) has the host's
// /proc/sys/net mounted read-write (deploy/daemonset.yaml). The net.* tunables
// are those of the network namespace of the process that opens them, wherever
// procfs is mounted.
type Dir string

// Set writes value to the sysctl at path below d; one that already has the value is
// not written, so a read-only /proc/sys is only an error when a value must change.
func (d Dir) Set(path, value string) error {
	full := filepath.Join(string(d), path)
	cur, readErr := os.ReadFile(full)
	if readErr == nil && strings.TrimSpace(string(cur)) == value {
		return nil
	}
	err := os.WriteFile(full, []byte(value), 0o644)
	if err == nil {
		return nil
	}
	if Unwritable(err) && readErr == nil {
		return fmt.Errorf("sysctl %s=%s (now %s): %s is not writable here; in a container, mount the host's /proc/sys/net read-write and name its parent with --proc-sys-dir: %w",
			path, value, strings.TrimSpace(string(cur)), full, err)
	}
	return fmt.Errorf("sysctl %s=%s: %w", path, value, err)
}

// Read returns the sysctl at path below d, trimmed.
func (d Dir) Read(path string) (string, error) {
	b, err := os.ReadFile(filepath.Join(string(d), path))
	return strings.TrimSpace(string(b)), err
}

// Unwritable reports whether err is a write refused by a read-only mount or by the
// tunable's permissions (for example a host-wide setting in another network
// namespace), as opposed to a failure of the write itself.
func Unwritable(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)
}
