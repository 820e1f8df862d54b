package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Process is a long-running program started inside a namespace. Its stdout and
// stderr go to LogPath, which tests print on failure.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error // set before done is closed
}

// StartProcess runs bin with args inside the logical namespace ns via "ip netns exec",
// which execs the program itself, so signals sent to the Process reach it directly.
func (c *Cluster) StartProcess(ns, label, bin string, args ...string) (*Process, error) {
	logPath := filepath.Join(c.logDir(), fmt.Sprintf("%s-%d.log", label, time.Now().UnixNano()))
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("cluster: log file for %s: %w", label, err)
	}
	full := append([]string{"netns", "exec", c.NS(ns), bin}, args...)
	cmd := exec.Command("ip", full...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("cluster: start %s in %s: %w", bin, c.NS(ns), err)
	}
	p := &Process{Name: label, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

// Pid is the process id (the program itself, since ip netns exec execs it).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Wait waits up to timeout for the process to exit and returns its exit error
// (nil for status 0); it returns an error if it is still running then.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s (pid %d) still running after %v", p.Name, p.Pid(), timeout)
	}
}

// Stop sends SIGTERM and waits up to 10 s for a clean exit, then kills. It returns the
// exit error of a process that stopped in time.
func (p *Process) Stop() error {
	if !p.Running() {
		return p.err
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	err := p.Wait(10 * time.Second)
	if p.Running() {
		p.Kill()
		return fmt.Errorf("%s did not stop on SIGTERM: %w", p.Name, err)
	}
	return err
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Process) Kill() {
	if !p.Running() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Logs returns everything the process has written so far.
func (p *Process) Logs() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.LogPath, err)
	}
	return string(b)
}

// Cmd is the underlying command, for tests that send other signals.
func (p *Process) Cmd() *exec.Cmd { return p.cmd }
