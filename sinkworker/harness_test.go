package sinkworker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/jetsink/jetsink/internal/testutil/natstest"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
	"github.com/jetsink/jetsink/sinkworker/config"
)

const (
	testStream = "EVENTS"
	testBucket = "lake"
	testPrefix = "events/"
)

// env is one test's real NATS JetStream and real S3 (versitygw), plus a
// fault-injecting proxy in front of S3 that the worker talks to.
type env struct {
	t     *testing.T
	nats  *natstest.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	s3    *s3test.Server
	proxy *s3test.FaultProxy
	cfg   config.Config
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, nats: natstest.Start(t), s3: s3test.Start(t)}
	e.nc, e.js = e.nats.JetStream(t)
	e.nats.CreateStream(t, testStream, "events.>")
	e.s3.CreateBucket(t, testBucket)
	e.s3.SetEnv(t)
	e.proxy = s3test.NewFaultProxy(t, e.s3, testBucket)
	e.cfg = config.Default()
	e.cfg.NATSURL = e.nats.ClientURL()
	e.cfg.Stream = testStream
	e.cfg.Consumer = "warehouse"
	e.cfg.FilterSubjects = []string{"events.>"}
	e.cfg.AckWait = 10 * time.Second
	e.cfg.MaxAckPending = 100000
	e.cfg.Bucket = testBucket
	e.cfg.Prefix = testPrefix
	e.cfg.Endpoint = e.proxy.URL
	e.cfg.ForcePathStyle = true
	e.cfg.Workers = 2
	e.cfg.BatchMaxEvents = 500
	e.cfg.BatchMaxAge = 300 * time.Millisecond
	e.cfg.ShutdownTimeout = 10 * time.Second
	e.cfg.MetricsAddr = "127.0.0.1:0"
	return e
}

// running is a worker started by a test.
type running struct {
	*Worker
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs a worker with e.cfg until the test ends (or stop).
func (e *env) start(backoff Backoff) *running {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	w, err := New(e.cfg, Options{Logger: testLogger(e.t), Registry: reg, Backoff: backoff})
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Worker: w, reg: reg, cancel: cancel, done: make(chan error, 1)}
	// The label lets a CPU profile of a test tell the worker from the
	// in-process NATS server (go tool pprof -tagfocus component=worker).
	go pprof.Do(ctx, pprof.Labels("component", "worker"), func(ctx context.Context) { r.done <- w.Run(ctx) })
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

// stop cancels the worker (as SIGTERM does) and waits for its drain.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(r.cfg.ShutdownTimeout + 5*time.Second):
			t.Fatalf("worker did not stop within ShutdownTimeout (%s)", r.cfg.ShutdownTimeout)
		}
	})
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("JETSINK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testEvent is one valid event; its id says which it is.
type testEvent struct {
	ID  string
	App string
	TS  time.Time
}

func (ev testEvent) body(i int) []byte {
	m := map[string]any{
		"event_id": ev.ID, "app_id": ev.App, "event": "page_view",
		"user_id":    fmt.Sprintf("user-%d", i%97),
		"properties": map[string]any{"path": "/p/" + ev.ID, "n": i},
		"context":    map[string]any{"ip": "10.0.0.1"},
	}
	// Both timestamp forms the envelope allows.
	if i%2 == 0 {
		m["timestamp"] = ev.TS.Format(time.RFC3339Nano)
	} else {
		m["timestamp"] = ev.TS.UnixMilli()
	}
	b, _ := json.Marshal(m)
	return b
}

// makeEvents returns n events spread over apps and hours of one day.
func makeEvents(n int, apps []string, hours int) []testEvent {
	base := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	evs := make([]testEvent, n)
	for i := range evs {
		evs[i] = testEvent{
			ID:  fmt.Sprintf("ev-%06d", i),
			App: apps[i%len(apps)],
			TS:  base.Add(time.Duration(i%hours)*time.Hour + time.Duration(i)*time.Millisecond),
		}
	}
	return evs
}

// publish sends events with JetStream async publishes and waits for every ack.
func (e *env) publish(evs []testEvent) {
	e.t.Helper()
	for i, ev := range evs {
		e.publishRaw("events."+ev.App, ev.body(i))
	}
	e.waitPublished()
}

func (e *env) publishRaw(subject string, body []byte) {
	e.t.Helper()
	for {
		_, err := e.js.PublishAsync(subject, body)
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			// A loaded machine: let the outstanding publishes complete.
			e.waitPublished()
			continue
		}
		if err != nil {
			e.t.Fatalf("publish: %v", err)
		}
		return
	}
}

func (e *env) waitPublished() {
	e.t.Helper()
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		e.t.Fatal("publishes not acknowledged")
	}
}

// objects reads back every Parquet file under the prefix, by key.
func (e *env) objects() map[string][]Row {
	e.t.Helper()
	out := map[string][]Row{}
	for _, key := range e.s3.List(e.t, testBucket, testPrefix) {
		body := e.s3.Get(e.t, testBucket, key)
		rows, err := parquet.Read[Row](bytes.NewReader(body), int64(len(body)))
		if err != nil {
			e.t.Fatalf("read parquet %s: %v", key, err)
		}
		out[key] = rows
	}
	return out
}

// consumer returns the durable consumer's state on the server.
func (e *env) consumer() *jetstream.ConsumerInfo {
	e.t.Helper()
	c, err := e.js.Consumer(e.t.Context(), testStream, e.cfg.Consumer)
	if err != nil {
		e.t.Fatalf("consumer: %v", err)
	}
	info, err := c.Info(e.t.Context())
	if err != nil {
		e.t.Fatalf("consumer info: %v", err)
	}
	return info
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metric sums the series of a metric whose labels include labels.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// checkWritten asserts that the files hold exactly want, each event once,
// each in the file of its own partition, and returns the number of files.
func (e *env) checkWritten(want []testEvent) int {
	e.t.Helper()
	byID := map[string]testEvent{}
	for _, ev := range want {
		byID[ev.ID] = ev
	}
	seen := map[string]string{}
	objs := e.objects()
	rows := 0
	for key, rs := range objs {
		for _, r := range rs {
			rows++
			ev, ok := byID[r.EventID]
			if !ok {
				e.t.Errorf("%s: unexpected event %q", key, r.EventID)
				continue
			}
			if prev, dup := seen[r.EventID]; dup {
				e.t.Errorf("event %s written twice: %s and %s", r.EventID, prev, key)
			}
			seen[r.EventID] = key
			wantDir := fmt.Sprintf("%sapp_id=%s/date=%s/hour=%s/", testPrefix, ev.App, ev.TS.Format("2006-01-02"), ev.TS.Format("15"))
			if !strings.HasPrefix(key, wantDir) {
				e.t.Errorf("event %s (app %s, %s) in %s, want under %s", ev.ID, ev.App, ev.TS, key, wantDir)
			}
			if r.AppID != ev.App || !r.Timestamp.Equal(ev.TS.Truncate(time.Microsecond)) {
				e.t.Errorf("event %s read back as app %q ts %s, want %q %s", ev.ID, r.AppID, r.Timestamp, ev.App, ev.TS)
			}
		}
	}
	if rows != len(want) || len(seen) != len(want) {
		e.t.Errorf("read back %d rows (%d distinct events) in %d files, want %d", rows, len(seen), len(objs), len(want))
	}
	return len(objs)
}
