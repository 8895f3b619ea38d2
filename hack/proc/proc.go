// Package proc runs the local stack's and the local cluster's host
// processes (etcd, the control plane, containerd, the kubelet, NATS tools,
// versitygw): each in its own process group, its output in its own log
// file, killed if the process that started it dies, and stopped with
// SIGTERM and then SIGKILL after a grace period.
package proc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Proc is a running child process with its log file.
type Proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	err     error
	grace   time.Duration
}

// Start starts bin with args and the environment plus env, writing its
// output to <logDir>/<name>.log. grace is how long Stop waits after SIGTERM.
func Start(name, logDir, bin string, args, env []string, grace time.Duration) (*Proc, error) {
	return StartAs(nil, name, logDir, bin, args, env, grace)
}

// StartAs is Start as the user cred names (nil: this process's).
func StartAs(cred *syscall.Credential, name, logDir, bin string, args, env []string, grace time.Duration) (*Proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// Own process group, and killed if this process dies without Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: cmd, exited: make(chan struct{}), grace: grace}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.exited)
	}()
	return p, nil
}

// Pid is the process's ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// WaitFor polls ready every 100 ms until it holds, the process exits, ctx
// ends or timeout passes; the error carries the end of the process's log.
func (p *Proc) WaitFor(ctx context.Context, timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ready() {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited: %v; its log:\n%s", p.Name, p.err, Tail(p.LogPath, 30))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s; its log:\n%s", p.Name, timeout, Tail(p.LogPath, 30))
		}
	}
	return nil
}

// Stop sends SIGTERM and, after the grace period, SIGKILL to the whole
// process group; it returns once the process has exited.
func (p *Proc) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(p.grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// Tail returns the last n lines of a file.
func Tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
