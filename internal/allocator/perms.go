package allocator

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/klog/v2"
)

// The state directory is kproxy's alone: 0700, its files 0600. Another user who
// could write it could hand kproxy allocations (or a symlink for its lock) of their
// choosing; one who could read it learns nothing secret, but has no reason to.
const (
	stateDirMode  os.FileMode = 0o700
	stateFileMode os.FileMode = 0o600
)

// ensurePrivateDir creates dir 0700, or brings an existing one that other users may
// open back to 0700 (its files to 0600) when it holds nothing but kproxy's own
// files: a directory a kubelet hostPath DirectoryOrCreate made (0755), or one an
// older kproxy or an operator left open. A directory that also holds other files is
// shared with something else (--state-dir=/var/lib, or /tmp), and changing its mode
// would break that something: kproxy warns if others may only read it, and refuses
// it if others may write it.
func ensurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, stateDirMode); err != nil {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	mode := fi.Mode().Perm()
	if mode&^stateDirMode == 0 {
		return nil
	}
	ours, foreign, err := onlyStateFiles(dir)
	if err != nil {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	if foreign != "" {
		if mode&0o022 != 0 {
			return fmt.Errorf("state directory %s has mode %#o: other users may write it, and it holds %s, which is not kproxy's; give --state-dir a directory of kproxy's own", dir, mode, foreign)
		}
		klog.InfoS("The state directory may be read by other users and holds other files; leaving its mode alone", "dir", dir, "mode", fmt.Sprintf("%#o", mode), "otherFile", foreign)
		return nil
	}
	// Files first: once the directory is 0700 nobody else reaches them anyway, but
	// they should not stay open should the directory's mode be widened again.
	for _, name := range ours {
		p := filepath.Join(dir, name)
		if err := os.Chmod(p, stateFileMode); err != nil {
			klog.InfoS("Cannot restrict a state file to its owner", "file", p, "err", err)
		}
	}
	if err := os.Chmod(dir, stateDirMode); err != nil {
		// A read-only mount: the lock or the save reports what really fails.
		klog.InfoS("Cannot restrict the state directory to its owner", "dir", dir, "mode", fmt.Sprintf("%#o", mode), "err", err)
		return nil
	}
	klog.InfoS("Restricted the state directory to its owner", "dir", dir, "was", fmt.Sprintf("%#o", mode), "now", fmt.Sprintf("%#o", stateDirMode))
	return nil
}

// onlyStateFiles lists dir: the names of kproxy's own files, and the first name that
// is not one of them ("" if there is none).
func onlyStateFiles(dir string) (ours []string, foreign string, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, "", err
	}
	for _, e := range entries {
		name := e.Name()
		// A symlink is never kproxy's: chmod would follow it out of the directory.
		if e.Type().IsRegular() && (name == stateFileName || name == lockFileName || strings.HasPrefix(name, stateFileName+".tmp")) {
			ours = append(ours, name)
			continue
		}
		return ours, name, nil
	}
	return ours, "", nil
}
