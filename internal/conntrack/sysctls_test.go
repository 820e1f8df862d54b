package conntrack

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeKernel lays out the tunables SetSysctlsAt touches under a temp dir.
func fakeKernel(t *testing.T, cpus string, files map[string]string) Roots {
	t.Helper()
	dir := t.TempDir()
	roots := Roots{ProcSys: filepath.Join(dir, "proc/sys"), Sys: filepath.Join(dir, "sys")}
	all := map[string]string{"sys/devices/system/cpu/online": cpus}
	for k, v := range files {
		all[k] = v
	}
	for rel, content := range all {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return roots
}

const (
	ctMax       = "proc/sys/net/netfilter/nf_conntrack_max"
	hashsize    = "sys/module/nf_conntrack/parameters/hashsize"
	established = "proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established"
	closeWait   = "proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait"
	beLiberal   = "proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"
	udpTimeout  = "proc/sys/net/netfilter/nf_conntrack_udp_timeout"
	udpStream   = "proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream"
)

func read(t *testing.T, roots Roots, rel string) string {
	t.Helper()
	base := filepath.Dir(filepath.Dir(roots.ProcSys)) // the temp dir
	b, err := os.ReadFile(filepath.Join(base, rel))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func defaults() map[string]string {
	return map[string]string{
		ctMax: "65536", hashsize: "16384", established: "432000", closeWait: "60",
		beLiberal: "0", udpTimeout: "30", udpStream: "120",
	}
}

func TestSetSysctlsRaisesMaxAndHashsize(t *testing.T) {
	roots := fakeKernel(t, "0-3", defaults())
	// 4 CPUs × 32768 = 131072 beats the floor of 100000.
	err := SetSysctlsAt(roots, Sysctls{MaxPerCore: 32768, Min: 100000,
		TCPEstablishedTimeout: 24 * time.Hour, TCPCloseWaitTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]string{
		ctMax: "131072", hashsize: "32768", established: "86400", closeWait: "3600",
		beLiberal: "0", udpTimeout: "30", udpStream: "120", // zero values leave these alone
	} {
		if got := read(t, roots, rel); got != want {
			t.Errorf("%s = %s, want %s", rel, got, want)
		}
	}
}

func TestSetSysctlsUsesMinAsFloor(t *testing.T) {
	roots := fakeKernel(t, "0,2", defaults()) // 2 online CPUs
	if err := SetSysctlsAt(roots, Sysctls{MaxPerCore: 1000, Min: 131072}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, roots, ctMax); got != "131072" {
		t.Errorf("nf_conntrack_max = %s, want the floor 131072", got)
	}
}

func TestSetSysctlsCapsMax(t *testing.T) {
	roots := fakeKernel(t, "0-63", defaults())
	if err := SetSysctlsAt(roots, Sysctls{MaxPerCore: 32768}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, roots, ctMax); got != "1048576" {
		t.Errorf("nf_conntrack_max = %s, want the cap 1048576", got)
	}
	if got := read(t, roots, hashsize); got != "262144" {
		t.Errorf("hashsize = %s, want 262144", got)
	}
}

func TestSetSysctlsNeverLowers(t *testing.T) {
	files := defaults()
	files[ctMax], files[hashsize] = "2000000", "500000"
	roots := fakeKernel(t, "0-3", files)
	if err := SetSysctlsAt(roots, Sysctls{MaxPerCore: 32768, Min: 131072}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, roots, ctMax); got != "2000000" {
		t.Errorf("nf_conntrack_max lowered to %s", got)
	}
	if got := read(t, roots, hashsize); got != "500000" {
		t.Errorf("hashsize lowered to %s", got)
	}
}

func TestSetSysctlsHashsizeRaisedEvenWhenMaxIsHighEnough(t *testing.T) {
	files := defaults()
	files[ctMax] = "262144"
	roots := fakeKernel(t, "0-3", files)
	if err := SetSysctlsAt(roots, Sysctls{MaxPerCore: 32768}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, roots, hashsize); got != "32768" {
		t.Errorf("hashsize = %s, want max/4 = 32768", got)
	}
}

func TestSetSysctlsOptionalSettings(t *testing.T) {
	roots := fakeKernel(t, "0-1", defaults())
	err := SetSysctlsAt(roots, Sysctls{TCPBeLiberal: true, UDPTimeout: 45 * time.Second, UDPStreamTimeout: 3 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]string{
		beLiberal: "1", udpTimeout: "45", udpStream: "180",
		ctMax: "65536", hashsize: "16384", established: "432000", // MaxPerCore 0: untouched
	} {
		if got := read(t, roots, rel); got != want {
			t.Errorf("%s = %s, want %s", rel, got, want)
		}
	}
}

func TestSetSysctlsSkipsAbsentFiles(t *testing.T) {
	// No conntrack module: nothing to set, nothing to fail.
	roots := fakeKernel(t, "0-1", nil)
	err := SetSysctlsAt(roots, Sysctls{MaxPerCore: 32768, Min: 131072, TCPEstablishedTimeout: time.Hour,
		TCPBeLiberal: true, UDPTimeout: time.Minute})
	if err != nil {
		t.Fatalf("absent tunables reported as an error: %v", err)
	}
	if _, err := os.Stat(filepath.Join(roots.ProcSys, "net/netfilter/nf_conntrack_max")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("an absent tunable was created: %v", err)
	}
}

func TestSetSysctlsReportsUnexpectedFailures(t *testing.T) {
	files := defaults()
	files[udpTimeout] = "not-a-number"
	roots := fakeKernel(t, "0-1", files)
	// A directory where a tunable should be: the write fails with EISDIR.
	if err := os.Remove(filepath.Join(filepath.Dir(filepath.Dir(roots.ProcSys)), closeWait)); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(filepath.Dir(filepath.Dir(roots.ProcSys)), closeWait), 0o755); err != nil {
		t.Fatal(err)
	}
	err := SetSysctlsAt(roots, Sysctls{TCPCloseWaitTimeout: time.Hour, UDPTimeout: time.Minute, TCPBeLiberal: true})
	if err == nil {
		t.Fatal("unexpected failures were not reported")
	}
	for _, want := range []string{"nf_conntrack_udp_timeout", "not-a-number", "nf_conntrack_tcp_timeout_close_wait"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// The failures did not stop the settings after them.
	if got := read(t, roots, beLiberal); got != "1" {
		t.Errorf("tcp_be_liberal = %s after earlier failures, want 1", got)
	}
}

func TestSkipUnwritable(t *testing.T) {
	for _, err := range []error{
		&fs.PathError{Op: "open", Path: "/proc/sys/x", Err: syscall.EACCES},
		&fs.PathError{Op: "open", Path: "/proc/sys/x", Err: syscall.EPERM},
		&fs.PathError{Op: "open", Path: "/sys/x", Err: syscall.EROFS},
		&fs.PathError{Op: "open", Path: "/sys/x", Err: syscall.ENOENT},
	} {
		if got := skipUnwritable("/x", err); got != nil {
			t.Errorf("%v not skipped: %v", err, got)
		}
	}
	if got := skipUnwritable("/x", &fs.PathError{Op: "write", Path: "/x", Err: syscall.EINVAL}); got == nil {
		t.Error("EINVAL (value refused by the kernel) was skipped")
	}
}

func TestCountCPUList(t *testing.T) {
	for list, want := range map[string]int{"0": 1, "0-1": 2, "0-3,6": 5, "0,2,4-7": 6} {
		if got, err := countCPUList(list); err != nil || got != want {
			t.Errorf("countCPUList(%q) = %d, %v; want %d", list, got, err, want)
		}
	}
	for _, bad := range []string{"", "a-b", "3-1", "0-"} {
		if _, err := countCPUList(bad); err == nil {
			t.Errorf("countCPUList(%q) accepted", bad)
		}
	}
}
