package sinkworker

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetsink/jetsink/internal/testutil/natstest"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// A worker whose NATS requires TLS with client certificates and whose S3
// serves a certificate from a private CA writes every event, with the CA
// and certificates it was given as PEM in its configuration (the way the
// pod gets them from the users' Secrets).
func TestWorkerOverTLS(t *testing.T) {
	ns := natstest.StartTLS(t, natstest.TLSOptions{VerifyClients: true})
	s3s, s3CA := s3test.StartTLS(t)
	e := &env{t: t, nats: ns, s3: s3s}
	e.nc, e.js = ns.JetStream(t)
	ns.CreateStream(t, testStream, "events.>")
	s3s.CreateBucket(t, testBucket)
	s3s.SetEnv(t)

	e.cfg = config.Default()
	// nats://, not tls://: a server that requires TLS gets it either way.
	e.cfg.NATSURL = strings.Replace(ns.ClientURL(), "tls://", "nats://", 1)
	e.cfg.FromSecret(config.NATSTLSSecretEnv, map[string][]byte{
		"ca.crt": ns.PKI.CAPEM, "tls.crt": ns.PKI.ClientCertPEM, "tls.key": ns.PKI.ClientKeyPEM,
	})
	e.cfg.FromSecret(config.S3TLSSecretEnv, map[string][]byte{"ca.crt": s3CA})
	e.cfg.Stream = testStream
	e.cfg.FilterSubjects = []string{"events.>"}
	e.cfg.AckWait = 10 * time.Second
	e.cfg.Bucket = testBucket
	e.cfg.Prefix = testPrefix
	e.cfg.Endpoint = s3s.URL
	e.cfg.ForcePathStyle = true
	e.cfg.Workers = 2
	e.cfg.BatchMaxAge = 300 * time.Millisecond
	e.cfg.ShutdownTimeout = 10 * time.Second
	e.cfg.MetricsAddr = "127.0.0.1:0"

	evs := makeEvents(200, []string{"shop", "blog"}, 2)
	e.publish(evs)
	w := e.start(Backoff{})
	eventually(t, 30*time.Second, "every event ACKed", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	w.stop(t)
	e.checkWritten(evs)
	if n := metric(t, w.reg, "jetsink_s3_errors_total"); n != 0 {
		t.Errorf("%v S3 errors", n)
	}
}

// A worker without the CA of its TLS NATS server says why it cannot
// connect, in its log, while it keeps retrying unready; it does not retry
// silently for ever.
func TestWorkerWithoutTheNATSCALogsWhy(t *testing.T) {
	ns := natstest.StartTLS(t, natstest.TLSOptions{VerifyClients: true})
	ns.CreateStream(t, testStream, "events.>")
	s3s := s3test.Start(t)
	s3s.CreateBucket(t, testBucket)
	s3s.SetEnv(t)
	cfg := config.Default()
	cfg.NATSURL, cfg.Stream, cfg.Bucket = ns.ClientURL(), testStream, testBucket
	cfg.Endpoint, cfg.ForcePathStyle = s3s.URL, true
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.MetricsAddr = "127.0.0.1:0"
	var logs lockedBuffer
	w, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	eventually(t, 15*time.Second, "the connect error in the log", func() bool {
		return strings.Contains(logs.String(), "Could not connect to NATS") &&
			strings.Contains(logs.String(), "certificate signed by unknown authority")
	})
	if w.ready.Load() {
		t.Error("ready without a NATS connection")
	}
	// Retries every second log the same error once, not once a second.
	time.Sleep(2500 * time.Millisecond)
	if n := strings.Count(logs.String(), "Could not connect to NATS"); n != 1 {
		t.Errorf("the same connect error logged %d times in 2.5s, want once", n)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(cfg.ShutdownTimeout + 5*time.Second):
		t.Fatal("worker did not stop")
	}
}

// lockedBuffer is a log sink safe for the worker's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The uploader trusts S3's private CA when it is given (S3TLSConfig), and
// refuses the server's certificate without it or with another CA: the
// upload fails with the verification error, it is not sent in the clear
// or unverified.
func TestUploaderTrustsTheS3CA(t *testing.T) {
	s, ca := s3test.StartTLS(t)
	s.CreateBucket(t, "lake")
	s.SetEnv(t)
	if !strings.HasPrefix(s.URL, "https://") {
		t.Fatalf("versitygw serves %s, want https", s.URL)
	}
	_, otherCA := s3test.StartTLS(t)

	put := func(caPEM []byte, key string) error {
		cfg := config.Default()
		cfg.Bucket, cfg.Endpoint, cfg.ForcePathStyle = "lake", s.URL, true
		cfg.S3TLSCA = string(caPEM)
		var b *batcher
		m := newMetrics(prometheus.NewRegistry(), func() *batcher { return b }, 0, false)
		b = newBatcher(cfg, nil, m)
		up, err := newUploader(t.Context(), cfg, m)
		if err != nil {
			t.Fatal(err)
		}
		_, err = up.put(t.Context(), key, []byte("body"), contentHash([]byte("body")))
		return err
	}

	if err := put(ca, "with-ca.parquet"); err != nil {
		t.Fatalf("put with the CA: %v", err)
	}
	if got := string(s.Get(t, "lake", "with-ca.parquet")); got != "body" {
		t.Errorf("object holds %q", got)
	}
	for name, caPEM := range map[string][]byte{"without a CA": nil, "with another CA": otherCA} {
		err := put(caPEM, "refused.parquet")
		if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Errorf("put %s: %v, want a certificate verification error", name, err)
		}
	}
	if keys := s.List(t, "lake", "refused"); len(keys) != 0 {
		t.Errorf("refused uploads were written: %v", keys)
	}
}
