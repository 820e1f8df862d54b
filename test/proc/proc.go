// Package proc runs the long-lived programs of a test environment (etcd, the API
// server, containerd, kubelets): output to a log file, a handle that knows whether
// the program still runs, and a stop that is only ever sent to its own PID.
package proc

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Process is one started program.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error // set before done is closed
}

// Start runs cmd with its output appended to logPath (a header line marks each
// start). The program is killed if the starting process dies (Pdeathsig), so nothing
// outlives a test binary or a supervisor that is killed before it can clean up.
func Start(name, logPath string, cmd *exec.Cmd) (*Process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	if _, err := fmt.Fprintf(f, "\n==== %s starting at %s\n", name, time.Now().Format(time.RFC3339Nano)); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the program's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Running reports whether the program has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Err is the exit error of a program that exited (nil while it runs).
func (p *Process) Err() error {
	if p.Running() {
		return nil
	}
	return p.err
}

// Exited returns, once the program has exited, an error with its exit status and
// its log's last lines; nil while it runs.
func (p *Process) Exited() error {
	if p.Running() {
		return nil
	}
	return fmt.Errorf("%s exited: %v; log %s ends:\n%s", p.Name, p.cmd.ProcessState, p.LogPath, p.LogTail(25))
}

// Stop sends SIGTERM, waits up to grace, then SIGKILLs, and waits for the exit.
func (p *Process) Stop(grace time.Duration) {
	if !p.Running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if p.Wait(grace) != nil && p.Running() {
		p.Kill()
	}
}

// Wait waits up to timeout for the program to exit and returns its exit error (nil
// for status 0); it returns an error if it still runs then.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s (pid %d) still running after %v", p.Name, p.Pid(), timeout)
	}
}

// Kill sends SIGKILL and waits for the program to be gone.
func (p *Process) Kill() {
	if !p.Running() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// State is the exit state of a program that exited (its status and rusage); nil while
// it runs.
func (p *Process) State() *os.ProcessState {
	if p.Running() {
		return nil
	}
	return p.cmd.ProcessState
}

// Signal sends sig to the program (its own PID only).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// LogTail is the last n lines of the log.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.LogPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
