package manifests

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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

// fileFailed records that name could not be read whole: it keeps the objects of its
// last good read, and is read again at the next pass whatever its stat says.
func (s *Source) fileFailed(name string, err error) {
	f := s.files[name]
	if f == nil {
		f = &fileState{}
		s.files[name] = f
	}
	f.stat, f.sum, f.parseErr = fileStat{}, [sha256.Size]byte{}, err
}

// unreadable says why a manifest file could not be read, spelling out a dangling
// symlink, which os.Stat reports as a missing file.
func unreadable(path string, err error) error {
	if target, lerr := os.Readlink(path); lerr == nil && errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s is a symlink to %s, which does not exist; the objects the file had are kept until the link resolves or is removed", path, target)
	}
	return fmt.Errorf("%s cannot be read (%w); the objects it had are kept until it can", path, err)
}

// scan lists Dir and re-reads the files that changed since the last scan, and those
// named in force (the watch saw them). Files that are gone are forgotten.
func (s *Source) scan(force map[string]bool) error {
	entries, err := os.ReadDir(s.opts.Dir)
	if err != nil {
		return fmt.Errorf("reading manifests directory: %w", err)
	}
	seen := map[string]bool{}
	s.links = map[string]string{}
	for _, e := range entries {
		name := e.Name()
		if !eligibleFile(name) {
			continue
		}
		path := filepath.Join(s.opts.Dir, name)
		if e.Type()&fs.ModeSymlink != 0 {
			if d := s.outsideTargetDir(path); d != "" {
				s.links[name] = d
			}
		}
		fi, err := os.Stat(path) // follows symlinks, as a ConfigMap volume needs
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && e.Type()&fs.ModeSymlink == 0 {
				continue // removed since the listing
			}
			// A dangling symlink, or one that cannot be followed: the file is there
			// but unreadable, which costs it nothing (kubelet's ConfigMap updates
			// leave a removed key's link dangling for a moment, then delete it).
			seen[name] = true
			s.fileFailed(name, unreadable(path, err))
			continue
		}
		if !fi.Mode().IsRegular() {
			continue // a directory (a ConfigMap volume's ..data is hidden anyway), a socket
		}
		seen[name] = true
		st := statOf(fi)
		f := s.files[name]
		if f != nil && f.stat == st && !force[name] {
			continue
		}
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) && e.Type()&fs.ModeSymlink == 0 {
			delete(seen, name) // removed since the listing
			continue
		}
		if err != nil {
			s.fileFailed(name, unreadable(path, err))
			continue
		}
		if len(data) == 0 {
			// Saving in place truncates the file, then writes it: an empty file is one
			// being written, not one that asks for its Services to go (deleting the
			// file does that, and a file with only a comment is read as empty).
			s.fileFailed(name, fmt.Errorf("%s is empty: taken as a file being written; the objects it had are kept until it has content or is removed", path))
			continue
		}
		if f == nil {
			f = &fileState{}
			s.files[name] = f
		}
		f.stat = st
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

// listing returns the manifest files of dir with their stat (zero for one that
// cannot be followed), to tell whether the directory is still being written.
func listing(dir string) (map[string]fileStat, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]fileStat{}
	for _, e := range entries {
		if !eligibleFile(e.Name()) {
			continue
		}
		var st fileStat
		if fi, err := os.Stat(filepath.Join(dir, e.Name())); err == nil {
			st = statOf(fi)
		}
		out[e.Name()] = st
	}
	return out, nil
}

// outsideTargetDir returns the directory the target of the symlink path is in, when
// that is outside Dir: edits there do not show in Dir's watch, so that directory is
// watched too. It returns "" for targets inside Dir, such as a ConfigMap volume's
// "..data/name" (its updates show as the swap of ..data in Dir itself). For a dangling
// link it is the directory the link points into, so that the target's return shows.
func (s *Source) outsideTargetDir(path string) string {
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		t, lerr := os.Readlink(path)
		if lerr != nil {
			return ""
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(path), t)
		}
		target = t
	}
	dir := filepath.Dir(filepath.Clean(target))
	roots := []string{filepath.Clean(s.opts.Dir)}
	if r, err := filepath.EvalSymlinks(s.opts.Dir); err == nil {
		roots = append(roots, r)
	}
	for _, root := range roots {
		if rel, err := filepath.Rel(root, dir); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return ""
		}
	}
	return dir
}

// targetDirs are the directories outside Dir that symlinks in it point into.
func (s *Source) targetDirs() map[string]bool {
	dirs := map[string]bool{}
	for _, d := range s.links {
		dirs[d] = true
	}
	return dirs
}
