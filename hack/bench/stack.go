package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/utils/ptr"

	"github.com/jetsink/jetsink/internal/pgserver"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
)

// stack is the loopback data path every run shares: one JetStream server
// (file store, in this process) and one versitygw (a child process, posix
// backend), as the tests and the local stack run them.
type stack struct {
	dir    string
	nats   *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	s3URL  string
	s3     *s3.Client
	gw     *exec.Cmd
	gwDone chan error
	// pg is the Iceberg run's SQL catalog database; pgDSN connects to it.
	pg     *pgserver.Cluster
	pgCmd  *exec.Cmd
	pgDone chan error
	pgDSN  string
}

func startStack(ctx context.Context, dir, versitygw string) (*stack, error) {
	s := &stack{dir: dir}
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: filepath.Join(dir, "nats"), NoSigs: true, NoLog: true,
	})
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats server did not become ready")
	}
	s.nats = ns
	if s.nc, err = nats.Connect(ns.ClientURL()); err != nil {
		s.stop()
		return nil, err
	}
	if s.js, err = jetstream.New(s.nc); err != nil {
		s.stop()
		return nil, err
	}
	if err := s.startS3(ctx, versitygw); err != nil {
		s.stop()
		return nil, err
	}
	if err := s.startPG(ctx); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// startPG runs PostgreSQL (Debian's package) for the Iceberg run's catalog.
func (s *stack) startPG(ctx context.Context) error {
	c, err := pgserver.Init("jetsink-bench-pg-")
	if err != nil {
		return err
	}
	s.pg = c
	port := freePort()
	logf, err := os.Create(filepath.Join(s.dir, "postgres.log"))
	if err != nil {
		return err
	}
	s.pgCmd = c.Command("postgres", c.ServerArgs("127.0.0.1", port)...)
	s.pgCmd.Stdout, s.pgCmd.Stderr = logf, logf
	if err := s.pgCmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	s.pgDone = make(chan error, 1)
	go func() { s.pgDone <- s.pgCmd.Wait(); logf.Close() }()
	for deadline := time.Now().Add(30 * time.Second); !c.Ready("127.0.0.1", port); {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("postgres not ready on port %d (see %s/postgres.log)", port, s.dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.pgDSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	return nil
}

func (s *stack) natsURL() string { return s.nats.ClientURL() }

func (s *stack) startS3(ctx context.Context, bin string) error {
	root := filepath.Join(s.dir, "s3")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort())
	logf, err := os.Create(filepath.Join(s.dir, "versitygw.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "--access", s3test.AccessKey, "--secret", s3test.SecretKey, "--region", s3test.Region,
		"--port", addr, "--quiet", "posix", root)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start versitygw (%s): %w", bin, err)
	}
	s.gw = cmd
	s.gwDone = make(chan error, 1)
	go func() { s.gwDone <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("versitygw did not listen on %s (log: %s)", addr, logf.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.s3URL = "http://" + addr
	s.s3 = s3test.NewClient(s.s3URL)
	_, err = s.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: ptr.To(bucket)})
	return err
}

// s3Env is the worker's AWS SDK environment for versitygw's root account.
func (s *stack) s3Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s3test.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3test.SecretKey,
		"AWS_REGION=" + s3test.Region, "AWS_EC2_METADATA_DISABLED=true",
	}
}

func (s *stack) stop() {
	if s.gw != nil && s.gw.Process != nil {
		_ = s.gw.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.gwDone:
		case <-time.After(5 * time.Second):
			_ = s.gw.Process.Kill()
			<-s.gwDone
		}
	}
	if s.pgCmd != nil && s.pgCmd.Process != nil {
		_ = s.pgCmd.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-s.pgDone:
		case <-time.After(10 * time.Second):
			_ = s.pgCmd.Process.Kill()
			<-s.pgDone
		}
	}
	if s.pg != nil {
		s.pg.Remove()
	}
	if s.nc != nil {
		s.nc.Close()
	}
	if s.nats != nil {
		s.nats.Shutdown()
		s.nats.WaitForShutdown()
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}
