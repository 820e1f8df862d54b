// Package sysctl writes kernel tunables. Backends take a Writer rather than writing
// /proc/sys themselves, so their tests never touch the host's kernel.
package sysctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Writer sets a sysctl given its path below /proc/sys ("net/ipv4/vs/conntrack").
type Writer func(path, value string) error

// Proc writes /proc/sys of this network namespace; a tunable that already has the
// value is not written.
func Proc(path, value string) error {
	full := filepath.Join("/proc/sys", path)
	if cur, err := os.ReadFile(full); err == nil && strings.TrimSpace(string(cur)) == value {
		return nil
	}
	if err := os.WriteFile(full, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", path, value, err)
	}
	return nil
}
