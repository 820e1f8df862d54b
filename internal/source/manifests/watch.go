package manifests

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/fsnotify/fsnotify"
	"k8s.io/klog/v2"
)

// dirWatch keeps an inotify watch on the manifests directory across the directory
// being removed, renamed away or replaced. The kernel ties a watch to an inode, and
// fsnotify drops it when that inode is deleted or moved: a directory recreated at the
// same path needs a new watch, or its changes would only be seen by the rescan.
type dirWatch struct {
	dir string
	w   *fsnotify.Watcher
	// id is the directory the watch is on (device and inode); zero when there is none.
	id dirID
	// targets are the directories outside dir that symlinks in it point into, watched
	// so that an edit of a link's target shows as fast as one of a file in dir.
	targets map[string]bool
}

type dirID struct{ dev, ino uint64 }

func newDirWatch(dir string, w *fsnotify.Watcher) *dirWatch {
	return &dirWatch{dir: filepath.Clean(dir), w: w, targets: map[string]bool{}}
}

func idOf(fi os.FileInfo) dirID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return dirID{dev: st.Dev, ino: st.Ino}
	}
	return dirID{}
}

// ensure makes sure the directory now at dir is the one watched. renewed is true when
// it (re)established the watch: the directory is then a different one, and every file
// in it must be looked at. An error means there is no directory to read (gone, not a
// directory, not watchable); the caller keeps what it delivered and asks again later.
func (d *dirWatch) ensure() (renewed bool, err error) {
	fi, err := os.Stat(d.dir)
	if err != nil {
		d.drop()
		return false, fmt.Errorf("manifests directory: %w", err)
	}
	if !fi.IsDir() {
		d.drop()
		return false, fmt.Errorf("manifests directory %s is no longer a directory", d.dir)
	}
	id := idOf(fi)
	if d.id == id && slices.Contains(d.w.WatchList(), d.dir) {
		return false, nil
	}
	d.drop()
	if err := d.w.Add(d.dir); err != nil {
		return false, fmt.Errorf("watching manifests directory %s: %w", d.dir, err)
	}
	d.id = id
	return true, nil
}

// drop removes the watch, if fsnotify still has one for dir (it drops it itself when
// the directory is deleted or moved).
func (d *dirWatch) drop() {
	if slices.Contains(d.w.WatchList(), d.dir) {
		_ = d.w.Remove(d.dir)
	}
	d.id = dirID{}
}

// follow watches exactly the directories in want besides dir. A directory that cannot
// be watched (it does not exist yet: a dangling link) is tried again at the next pass;
// meanwhile the rescan covers it.
func (d *dirWatch) follow(logger klog.Logger, want map[string]bool) {
	watched := d.w.WatchList()
	for p := range d.targets {
		if !want[p] {
			if slices.Contains(watched, p) {
				_ = d.w.Remove(p)
			}
			delete(d.targets, p)
		}
	}
	for p := range want {
		if d.targets[p] && slices.Contains(watched, p) {
			continue
		}
		if err := d.w.Add(p); err != nil {
			logger.V(4).Info("Cannot watch the directory a manifest symlink points into", "dir", p, "err", err)
			delete(d.targets, p)
			continue
		}
		d.targets[p] = true
	}
}
