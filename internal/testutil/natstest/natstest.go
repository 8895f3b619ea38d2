// Package natstest starts a real NATS server with JetStream in-process, on a
// random loopback port with a file store in the test's temp dir, for tests
// of the operator and the worker. Only tests import it.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsink/jetsink/internal/testutil/tlstest"
)

// Server is a running JetStream server.
type Server struct {
	*server.Server
	// PKI is the CA and certificates of a server started by StartTLS;
	// nil for a plain one.
	PKI *tlstest.PKI
}

// Start runs a JetStream server until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWithOptions(t, &server.Options{})
}

// StartWithOptions runs a server with opts (host, port, JetStream and store
// dir are filled in) until the test ends.
func StartWithOptions(t testing.TB, opts *server.Options) *Server {
	t.Helper()
	opts.Host = "127.0.0.1"
	if opts.Port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true
	opts.NoLog = true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not become ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return &Server{Server: s}
}

// JetStream connects to the server and returns the connection and its
// JetStream context; both are closed when the test ends.
func (s *Server) JetStream(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), s.clientOptions(t)...)
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// CreateStream creates a file-backed stream with the given subjects.
func (s *Server) CreateStream(t testing.TB, name string, subjects ...string) jetstream.Stream {
	t.Helper()
	_, js := s.JetStream(t)
	ctx := t.Context()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: subjects, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("create stream %s: %v", name, err)
	}
	return st
}
