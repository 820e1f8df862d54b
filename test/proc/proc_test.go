package proc

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStartStopLog: output reaches the log, Stop ends a running program by SIGTERM,
// and a program that exits on its own reports its status and log tail.
func TestStartStopLog(t *testing.T) {
	dir := t.TempDir()
	p, err := Start("sleeper", filepath.Join(dir, "sleeper.log"), exec.Command("sh", "-c", "echo hello; exec sleep 60"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.LogTail(5), "hello") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(p.LogTail(5), "hello") || !p.Running() || p.Exited() != nil {
		t.Fatalf("running program: log %q, running %v", p.LogTail(5), p.Running())
	}
	p.Stop(5 * time.Second)
	if p.Running() || !strings.Contains(p.Err().Error(), "terminated") {
		t.Errorf("after Stop: running %v, err %v; want ended by SIGTERM", p.Running(), p.Err())
	}

	q, err := Start("failer", filepath.Join(dir, "failer.log"), exec.Command("sh", "-c", "echo bad config; exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the failing program did not exit")
	}
	if e := q.Exited(); e == nil || !strings.Contains(e.Error(), "exit status 3") || !strings.Contains(e.Error(), "bad config") {
		t.Errorf("Exited() = %v, want the exit status and the log tail", e)
	}
}
