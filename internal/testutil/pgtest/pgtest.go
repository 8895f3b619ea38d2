// Package pgtest runs a real PostgreSQL server for tests: Debian's
// postgresql package (`make test-deps` installs it), a fresh cluster per
// test in a temporary directory, listening on a free loopback port with
// trust authentication, stopped and removed when the test ends.
//
// PostgreSQL refuses to run as root, so as root the server runs as the
// package's postgres user.
package pgtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Server is a running PostgreSQL.
type Server struct {
	// DSN connects as the superuser postgres to the database postgres.
	DSN  string
	Addr string

	start  func() // starts the server process on the same data and port
	stop   func() // stops it (fast shutdown)
	signal func(syscall.Signal)
}

// Stop stops the server (an outage); Start starts it again with its data.
func (s *Server) Stop()  { s.stop() }
func (s *Server) Start() { s.start() }

// binDir finds the server's binaries.
func binDir(t testing.TB) string {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "postgres")); err == nil {
			return dirs[i]
		}
	}
	t.Fatal("pgtest: no PostgreSQL server in /usr/lib/postgresql/*/bin: apt-get install -y postgresql (make test-deps)")
	return ""
}

// Start runs a PostgreSQL server until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := binDir(t)
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("pgtest: running as root needs the postgres user of the postgresql package: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = dir
		return cmd
	}
	data := filepath.Join(dir, "data")
	if out, err := run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s := &Server{DSN: fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", addr), Addr: addr}
	var exited chan error
	var logs bytes.Buffer
	s.stop = func() {
		if exited == nil {
			return
		}
		s.signal(syscall.SIGINT) // fast shutdown
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			s.signal(syscall.SIGKILL)
			<-exited
		}
		exited = nil
	}
	s.start = func() {
		t.Helper()
		cmd := run("postgres", "-D", data, "-p", strconv.Itoa(port), "-c", "listen_addresses=127.0.0.1",
			"-c", "unix_socket_directories="+dir, "-c", "fsync=off", "-c", "max_connections=100")
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatalf("pgtest: start postgres: %v", err)
		}
		exited = make(chan error, 1)
		s.signal = func(sig syscall.Signal) { _ = cmd.Process.Signal(sig) }
		go func(done chan error) { done <- cmd.Wait() }(exited)
		deadline := time.Now().Add(30 * time.Second)
		for {
			// pg_isready asks the server itself: a TCP connect alone
			// cannot tell a listening server from one starting up.
			if err := run("pg_isready", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(port)).Run(); err == nil {
				return
			}
			select {
			case err := <-exited:
				t.Fatalf("pgtest: postgres exited: %v\n%s", err, logs.String())
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("pgtest: postgres not ready on %s\n%s", addr, logs.String())
			}
		}
	}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
