package manifests

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// fileState is what one manifest file last gave.
type fileState struct {
	stat fileStat
	sum  [sha256.Size]byte // of the content last read, parsed or not
	// objects are from the last successful parse; a file that breaks keeps them, so
	// a half-saved edit costs nothing.
	objects  []parsedObject
	parsed   bool  // parsed successfully at least once
	parseErr error // the last read or parse failed
}

// fileStat is what tells a changed file from an unchanged one without reading it.
type fileStat struct {
	mtime time.Time
	size  int64
	ino   uint64
}

func statOf(fi fs.FileInfo) fileStat {
	st := fileStat{mtime: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st
}

// scan lists Dir and re-reads the files that changed since the last scan, and those
// named in force (the watch saw them). Files that are gone are forgotten.
func (s *Source) scan(force map[string]bool) error {
	entries, err := os.ReadDir(s.opts.Dir)
	if err != nil {
		return fmt.Errorf("reading manifests directory: %w", err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if !eligibleFile(name) {
			continue
		}
		path := filepath.Join(s.opts.Dir, name)
		fi, err := os.Stat(path) // follows symlinks, as a ConfigMap volume needs
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		seen[name] = true
		st := statOf(fi)
		f := s.files[name]
		if f != nil && f.stat == st && !force[name] {
			continue
		}
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			delete(seen, name) // removed since the listing
			continue
		}
		if f == nil {
			f = &fileState{}
			s.files[name] = f
		}
		f.stat = st
		if err != nil {
			f.parseErr = fmt.Errorf("%s: %w", path, err)
			continue
		}
		sum := sha256.Sum256(data)
		if sum == f.sum && (f.parsed || f.parseErr != nil) {
			continue // same content as last time: same result
		}
		f.sum = sum
		objs, err := parseFile(path, data)
		if err != nil {
			f.parseErr = err
			continue
		}
		f.objects, f.parsed, f.parseErr = objs, true, nil
	}
	for name := range s.files {
		if !seen[name] {
			delete(s.files, name)
		}
	}
	return nil
}
