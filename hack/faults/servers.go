package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jetsink/jetsink/internal/pgserver"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
)

// server is nats-server or versitygw as a process that can be stopped
// (SIGTERM or SIGKILL) and started again on the same port and the same
// data directory, as an outage and a restart look to the worker.
type server struct {
	name    string
	bin     string
	args    []string
	port    int
	logPath string
	cred    *syscall.Credential // the user it runs as; nil: the harness's
	cleanup func()              // removes what it keeps outside the case's dir
	p       *proc
}

// newNATS is nats-server with JetStream, its file store in dir.
func newNATS(bins binaries, dir, logs string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	store := filepath.Join(dir, "jetstream")
	return &server{name: "nats-server", bin: bins.nats, port: port, logPath: filepath.Join(logs, "nats-server.log"),
		args: []string{"-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", store}}, nil
}

// newS3 is versitygw with its posix backend rooted in dir (one directory
// per bucket), started the way internal/testutil/s3test starts it.
func newS3(bins binaries, dir, logs string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	root := filepath.Join(dir, "s3")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	return &server{name: "versitygw", bin: bins.versitygw, port: port, logPath: filepath.Join(logs, "versitygw.log"),
		args: []string{"--access", s3test.AccessKey, "--secret", s3test.SecretKey, "--region", s3test.Region,
			"--port", loopback(port), "--quiet", "posix", root}}, nil
}

// newPG is PostgreSQL (Debian's postgresql package), a fresh pgserver
// cluster with trust authentication: the Iceberg SQL catalog's database.
func newPG(logs string) (*server, error) {
	c, err := pgserver.Init("faults-pg-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		c.Remove()
		return nil, err
	}
	return &server{name: "postgres", bin: filepath.Join(c.BinDir, "postgres"), port: port,
		logPath: filepath.Join(logs, "postgres.log"), cred: c.Cred, cleanup: c.Remove,
		args: c.ServerArgs("127.0.0.1", port)}, nil
}

func (s *server) addr() string { return loopback(s.port) }

func (s *server) start() error {
	p, err := startProcAs(s.name, s.bin, s.args, nil, s.logPath, nil, s.cred)
	if err != nil {
		return err
	}
	s.p = p
	if err := waitListening(p, s.addr(), 20*time.Second); err != nil {
		_ = p.stop(syscall.SIGKILL, time.Second)
		return err
	}
	return nil
}

// stop ends the server with sig (SIGTERM: a clean shutdown, SIGKILL: a
// crash) and waits for it.
func (s *server) stop(sig syscall.Signal) {
	if s.p != nil && !s.p.exited() {
		_ = s.p.stop(sig, 10*time.Second)
	}
}

// remove stops the server for good and removes what it kept outside the
// case's directory. SIGINT: PostgreSQL's fast shutdown (its SIGTERM waits
// for every client to leave).
func (s *server) remove() {
	s.stop(syscall.SIGINT)
	if s.cleanup != nil {
		s.cleanup()
	}
}

// restart stops the server with sig, keeps it down for down, and starts it
// again on the same port and data.
func (s *server) restart(sig syscall.Signal, down time.Duration) error {
	s.stop(sig)
	time.Sleep(down)
	return s.start()
}
