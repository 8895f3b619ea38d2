package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// proc is one child process: a server of the stack or a worker. Its output
// goes to a log file (and to w as well, when given). Every proc is in
// running until it has exited, so killAll can end whatever is left on
// failure or Ctrl-C; each also gets SIGKILL from the kernel if the harness
// itself dies (Pdeathsig).
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // the exit status, once done is closed
}

var running sync.Map // *proc -> struct{}

func startProc(name, bin string, args, env []string, logPath string, also io.Writer) (*proc, error) {
	return startProcAs(name, bin, args, env, logPath, also, nil)
}

// startProcAs is startProc as another user (cred; nil: this one).
func startProcAs(name, bin string, args, env []string, logPath string, also io.Writer, cred *syscall.Credential) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "==== %s start %s\n", name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var out io.Writer = logf
	if also != nil {
		out = io.MultiWriter(logf, also)
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so a Ctrl-C on the terminal reaches the
	// harness only and the harness decides how each child stops.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	running.Store(p, struct{}{})
	go func() {
		p.err = cmd.Wait()
		fmt.Fprintf(logf, "==== %s exit %s: %v\n", name, time.Now().Format(time.RFC3339Nano), p.err)
		logf.Close()
		running.Delete(p)
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits up to grace for the exit, then SIGKILLs.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) error {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// exitCode is the process's exit code, or -1 when a signal ended it.
func (p *proc) exitCode() int { return p.cmd.ProcessState.ExitCode() }

// killAll SIGKILLs every child still running (the harness is stopping).
func killAll() {
	running.Range(func(k, _ any) bool {
		p := k.(*proc)
		_ = p.cmd.Process.Kill()
		<-p.done
		return true
	})
}

// freePort returns a loopback port nothing listens on right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// waitListening waits until addr accepts TCP connections, p exits, or
// timeout passes.
func waitListening(p *proc, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited before listening on %s: %v", p.name, addr, p.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: nothing listening on %s after %s", p.name, addr, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
