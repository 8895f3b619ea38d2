// Package pgtest runs a real PostgreSQL server for tests: a fresh
// pgserver cluster per test, listening on a free loopback port with trust
// authentication, stopped and removed when the test ends.
package pgtest

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jetsink/jetsink/internal/pgserver"
)

// Server is a running PostgreSQL.
type Server struct {
	// DSN connects as the superuser postgres to the database postgres.
	DSN  string
	Addr string

	cluster *pgserver.Cluster
	start   func() // starts the server process on the same data and port
	stop    func() // stops it (fast shutdown)
	signal  func(syscall.Signal)
}

// Stop stops the server (an outage); Start starts it again with its data.
func (s *Server) Stop()  { s.stop() }
func (s *Server) Start() { s.start() }

// Start runs a PostgreSQL server until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	c, err := pgserver.Init("pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Remove)
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s := &Server{DSN: fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", addr), Addr: addr, cluster: c}
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
		cmd := c.Command("postgres", c.ServerArgs("127.0.0.1", port)...)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatalf("pgtest: start postgres: %v", err)
		}
		exited = make(chan error, 1)
		s.signal = func(sig syscall.Signal) { _ = cmd.Process.Signal(sig) }
		go func(done chan error) { done <- cmd.Wait() }(exited)
		deadline := time.Now().Add(30 * time.Second)
		for !c.Ready("127.0.0.1", port) {
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

// RequirePasswords makes every user but postgres log in over TCP with a
// password (scram-sha-256), as a production database would; postgres
// keeps trust, so the test can still set things up.
func (s *Server) RequirePasswords(t testing.TB) {
	t.Helper()
	hba := "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
	if err := s.cluster.WriteHBA(hba); err != nil {
		t.Fatal(err)
	}
	if out, err := s.cluster.Command("pg_ctl", "reload", "-D", s.cluster.Data).CombinedOutput(); err != nil {
		t.Fatalf("pgtest: reload: %v\n%s", err, out)
	}
}
