package allocator

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

const (
	stateFileName = "allocations.json"
	lockFileName  = "allocations.lock"
	// lockWait is how long a new process waits for the lock of one still exiting.
	lockWait     = 15 * time.Second
	stateVersion = 1
)

// savedOwner is one owner's entry in the state file.
type savedOwner struct {
	IPs   []string       `json:"ips,omitempty"`
	Ports map[string]int `json:"ports,omitempty"`
}

type stateFile struct {
	Version int                   `json:"version"`
	Owners  map[string]savedOwner `json:"owners"`
}

// store is the state directory: the allocations file and the lock that keeps a second
// kproxy from using the same directory.
type store struct {
	dir  string
	lock *os.File
}

func openStore(dir string) (*store, error) {
	if err := ensurePrivateDir(dir); err != nil {
		return nil, err
	}
	lockPath := filepath.Join(dir, lockFileName)
	// Read-only is enough for flock, and it lets kproxy start on a state directory that
	// has become read-only (it then serves what is saved and reports each Service that
	// needs a new allocation) and lets an operator remount it read-only under a running
	// kproxy: a file open for writing would make that remount fail with EBUSY.
	f, err := os.OpenFile(lockPath, os.O_RDONLY|os.O_CREATE, stateFileMode)
	if err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	// flock locks belong to the open file, so they also keep two Allocators of one
	// process apart, and the kernel drops them when the process dies. A predecessor
	// that is still exiting (a restart) holds it for a moment: wait a little for it.
	deadline := time.Now().Add(lockWait)
	for logged := false; ; {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("locking %s: %w", lockPath, err)
		}
		if time.Now().After(deadline) {
			_ = f.Close()
			return nil, fmt.Errorf("state directory %s is in use by another kproxy process (%s is locked)", dir, lockPath)
		}
		if !logged {
			klog.InfoS("Waiting for another kproxy process to release the state directory", "dir", dir, "for", lockWait)
			logged = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return &store{dir: dir, lock: f}, nil
}

func (s *store) close() error {
	return s.lock.Close() // closing the file drops the flock
}

func (s *store) path() string { return filepath.Join(s.dir, stateFileName) }

// load reads the allocations file; a missing file is an empty state.
func (s *store) load() (map[string]savedOwner, error) {
	data, err := os.ReadFile(s.path())
	if errors.Is(err, os.ErrNotExist) {
		return map[string]savedOwner{}, nil
	}
	if err != nil {
		return nil, err
	}
	var sf stateFile
	if err := json.Unmarshal(data, &sf); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt (%w); remove it to start with fresh allocations", s.path(), err)
	}
	if sf.Version != stateVersion {
		return nil, fmt.Errorf("state file %s has version %d, this kproxy understands version %d", s.path(), sf.Version, stateVersion)
	}
	if sf.Owners == nil {
		sf.Owners = map[string]savedOwner{}
	}
	return sf.Owners, nil
}

// save replaces the allocations file atomically: a crash leaves either the old or the
// new file, never a torn one. Its errors name the state file, not the temp file, so
// that the same failure gives the same message each time it is retried.
func (s *store) save(owners map[string]savedOwner) error {
	data, err := json.MarshalIndent(stateFile{Version: stateVersion, Owners: owners}, "", "  ")
	if err != nil {
		return err
	}
	fail := func(step string, err error) error {
		return fmt.Errorf("saving allocations to %s: %s: %w", s.path(), step, cause(err))
	}
	tmp, err := os.CreateTemp(s.dir, stateFileName+".tmp*")
	if err != nil {
		return fail("creating a temporary file", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // fails harmlessly after the rename
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		_ = tmp.Close()
		return fail("writing", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fail("syncing", err)
	}
	if err := tmp.Close(); err != nil {
		return fail("closing", err)
	}
	if err := os.Rename(tmp.Name(), s.path()); err != nil {
		return fail("renaming the temporary file", err)
	}
	// The rename is only durable once the directory itself is synced.
	d, err := os.Open(s.dir)
	if err != nil {
		return fail("opening the directory", err)
	}
	defer func() { _ = d.Close() }()
	if err := d.Sync(); err != nil {
		return fail("syncing the directory", err)
	}
	return nil
}

// cause strips the path from a file system error: the callers name the file.
func cause(err error) error {
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return pe.Err
	}
	if le, ok := errors.AsType[*os.LinkError](err); ok {
		return le.Err
	}
	return err
}

func logDropped(owner, what, why string) {
	klog.InfoS("Dropping a saved allocation", "owner", owner, "allocation", what, "reason", why)
}
