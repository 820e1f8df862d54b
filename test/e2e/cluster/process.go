package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kproxy/kproxy/test/proc"
)

// Process is a long-running program started inside a namespace (a proc.Process: its
// stdout and stderr go to LogPath, which tests print on failure, and it is only ever
// signalled by its own PID).
type Process struct {
	*proc.Process
}

// StartProcess runs bin with args inside the logical namespace ns via "ip netns exec",
// which execs the program itself, so signals sent to the Process reach it directly.
func (c *Cluster) StartProcess(ns, label, bin string, args ...string) (*Process, error) {
	logPath := filepath.Join(c.logDir(), fmt.Sprintf("%s-%d.log", label, time.Now().UnixNano()))
	full := append([]string{"netns", "exec", c.NS(ns), bin}, args...)
	pp, err := proc.Start(label, logPath, exec.Command("ip", full...))
	if err != nil {
		return nil, fmt.Errorf("cluster: in %s: %w", c.NS(ns), err)
	}
	p := &Process{pp}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

// Stop sends SIGTERM and waits up to 10 s for a clean exit, then kills. It returns the
// exit error of a process that stopped in time.
func (p *Process) Stop() error {
	if !p.Running() {
		return p.Err()
	}
	_ = p.Signal(syscall.SIGTERM)
	err := p.Wait(10 * time.Second)
	if p.Running() {
		p.Kill()
		return fmt.Errorf("%s did not stop on SIGTERM: %w", p.Name, err)
	}
	return err
}

// Logs returns everything the process has written so far.
func (p *Process) Logs() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.LogPath, err)
	}
	return string(b)
}
