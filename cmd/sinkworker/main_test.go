package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"

	"github.com/jetsink/jetsink/internal/testutil/natstest"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
	"github.com/jetsink/jetsink/sinkworker"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// These tests run the real sinkworker binary, as the Deployment does, against
// an in-process JetStream and a versitygw S3, and stop it with SIGTERM.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sinkworker-test")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "sinkworker")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

type stack struct {
	nats  *natstest.Server
	js    jetstream.JetStream
	s3    *s3test.Server
	proxy *s3test.FaultProxy
	cfg   config.Config
}

func newStack(t *testing.T) *stack {
	s := &stack{nats: natstest.Start(t), s3: s3test.Start(t)}
	_, s.js = s.nats.JetStream(t)
	s.nats.CreateStream(t, "EVENTS", "events.>")
	s.s3.CreateBucket(t, "lake")
	s.proxy = s3test.NewFaultProxy(t, s.s3, "lake")
	cfg := config.Default()
	cfg.NATSURL = s.nats.ClientURL()
	cfg.Stream = "EVENTS"
	cfg.FilterSubjects = []string{"events.>"}
	cfg.AckWait = 2 * time.Minute // long: a NAK, not AckWait, must bring events back
	cfg.MaxAckPending = 100000
	cfg.Bucket = "lake"
	cfg.Prefix = "events/"
	cfg.Endpoint = s.proxy.URL
	cfg.ForcePathStyle = true
	cfg.Workers = 2
	cfg.BatchMaxEvents = 100000
	cfg.BatchMaxAge = time.Minute // batches stay open until SIGTERM
	cfg.ShutdownTimeout = 5 * time.Second
	s.cfg = cfg
	return s
}

func (s *stack) publish(t *testing.T, n int) {
	t.Helper()
	base := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	for i := range n {
		app := []string{"shop", "blog"}[i%2]
		body := fmt.Sprintf(`{"event_id":"ev-%d","app_id":%q,"event":"click","timestamp":%d}`, i, app,
			base.Add(time.Duration(i%3)*time.Hour).UnixMilli())
		if _, err := s.js.PublishAsync("events."+app, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-s.js.PublishAsyncComplete():
	case <-time.After(20 * time.Second):
		t.Fatal("publish not acknowledged")
	}
}

// proc is a running sinkworker process.
type proc struct {
	cmd     *exec.Cmd
	metrics string
	stderr  *syncBuffer
	exited  chan struct{}
	err     error
}

func (s *stack) run(t *testing.T) *proc {
	t.Helper()
	cfg := s.cfg
	cfg.MetricsAddr = freeAddr(t)
	cmd := exec.Command(binary(t))
	for _, v := range cfg.Environ() {
		cmd.Env = append(cmd.Env, v.Name+"="+v.Value)
	}
	cmd.Env = append(cmd.Env, s.s3.Env()...)
	p := &proc{cmd: cmd, metrics: "http://" + cfg.MetricsAddr, stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("sinkworker stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

// metric scrapes one unlabelled series from /metrics (-1 if unreachable).
func (p *proc) metric(name string) float64 {
	resp, err := http.Get(p.metrics + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// terminate sends SIGTERM and waits for the exit, returning how long it took.
func (p *proc) terminate(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(limit + 5*time.Second):
		t.Fatalf("sinkworker still running %s after SIGTERM", limit+5*time.Second)
	}
	took := time.Since(start)
	if p.err != nil {
		t.Errorf("sinkworker exited with %v, want 0", p.err)
	}
	if took > limit {
		t.Errorf("sinkworker took %s to exit, ShutdownTimeout is %s", took, limit)
	}
	return took
}

// stopped returns the fields of the worker's exit log line.
func (p *proc) stopped(t *testing.T) map[string]any {
	t.Helper()
	for line := range strings.SplitSeq(p.stderr.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "Stopped" {
			return rec
		}
	}
	t.Fatal("no \"Stopped\" log line")
	return nil
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// rows reads back every event id written, counting repeats.
func (s *stack) rows(t *testing.T) map[string]int {
	t.Helper()
	ids := map[string]int{}
	for _, key := range s.s3.List(t, "lake", "events/") {
		body := s.s3.Get(t, "lake", key)
		rows, err := parquet.Read[sinkworker.Row](bytes.NewReader(body), int64(len(body)))
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		for _, r := range rows {
			ids[r.EventID]++
		}
	}
	return ids
}

func (s *stack) checkRows(t *testing.T, n int) {
	t.Helper()
	ids := s.rows(t)
	for i := range n {
		if c := ids["ev-"+strconv.Itoa(i)]; c != 1 {
			t.Errorf("event ev-%d written %d times", i, c)
		}
	}
	if len(ids) != n {
		t.Errorf("%d distinct events written, want %d", len(ids), n)
	}
}

func (s *stack) consumer(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := s.js.Consumer(t.Context(), "EVENTS", s.cfg.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// SIGTERM with open batches: everything is written and ACKed before the
// process exits 0, within ShutdownTimeout.
func TestSIGTERMWritesOpenBatches(t *testing.T) {
	s := newStack(t)
	const n = 2000
	s.publish(t, n)
	p := s.run(t)
	waitFor(t, 30*time.Second, "all events fetched", func() bool { return p.metric("jetsink_events_received_total") == n })
	if files := p.metric("jetsink_files_written_total"); files != 0 {
		t.Fatalf("%v files written before SIGTERM; the batches were meant to be open", files)
	}
	took := p.terminate(t, s.cfg.ShutdownTimeout)
	t.Logf("drained %d events in %s", n, took)
	s.checkRows(t, n)
	info := s.consumer(t)
	if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream != n {
		t.Errorf("consumer after SIGTERM: ack pending %d, pending %d, ack floor %d; want 0, 0, %d",
			info.NumAckPending, info.NumPending, info.AckFloor.Stream, n)
	}
	if rec := p.stopped(t); rec["nacked"] != 0.0 || rec["timed_out"] != false {
		t.Errorf("exit log %v, want nacked 0, timed_out false", rec)
	}
}

// SIGTERM while S3 is down: the process still exits in time, ACKs nothing
// it did not write, and NAKs the rest so it comes back at once (not after
// AckWait) to the next worker, which writes it.
func TestSIGTERMWithS3DownNaksTheRest(t *testing.T) {
	s := newStack(t)
	const n = 1000
	s.publish(t, n)
	p := s.run(t)
	waitFor(t, 30*time.Second, "all events fetched", func() bool { return p.metric("jetsink_events_received_total") == n })
	s.proxy.Set("", s3test.Fault{Status: 503})
	p.terminate(t, s.cfg.ShutdownTimeout)

	if keys := s.s3.List(t, "lake", ""); len(keys) != 0 {
		t.Errorf("objects written while S3 was down: %v", keys)
	}
	if floor := s.consumer(t).AckFloor.Stream; floor != 0 {
		t.Errorf("ack floor %d: events were ACKed without being written", floor)
	}
	if rec := p.stopped(t); rec["nacked"] != float64(n) {
		t.Errorf("exit log %v, want nacked %d", rec, n)
	}

	// The next worker gets them right away: AckWait is 2 minutes.
	s.proxy.Clear()
	next := s.run(t)
	waitFor(t, 30*time.Second, "redelivered events received", func() bool { return next.metric("jetsink_events_received_total") == n })
	next.terminate(t, s.cfg.ShutdownTimeout)
	s.checkRows(t, n)
	if info := s.consumer(t); info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("consumer: ack pending %d, pending %d", info.NumAckPending, info.NumPending)
	}
}

// A bad configuration stops the process at once, naming the variable.
func TestInvalidConfigExits(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"JETSINK_STREAM=EVENTS", "JETSINK_S3_BUCKET=lake"}, "JETSINK_NATS_URL"},
		{[]string{"JETSINK_NATS_URL=nats://127.0.0.1:1", "JETSINK_STREAM=EVENTS", "JETSINK_S3_BUCKET=lake", "JETSINK_BATCH_MAX_AGE=soon"}, "JETSINK_BATCH_MAX_AGE"},
		{[]string{"JETSINK_NATS_URL=nats://127.0.0.1:1", "JETSINK_STREAM=EVENTS", "JETSINK_S3_BUCKET=lake", "JETSINK_COMPRESSION=lzma"}, "JETSINK_COMPRESSION"},
	} {
		cmd := exec.Command(binary(t))
		cmd.Env = tc.env
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("%v: exit %v, want non-zero", tc.env, err)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: output does not name %s:\n%s", tc.env, tc.want, out)
		}
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for a process writing while a test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var _ io.Writer = (*syncBuffer)(nil)

// SIGTERM while uploads hang: at the deadline the uploads are cut off and
// every event is NAKed, and the process still exits within ShutdownTimeout.
func TestSIGTERMWithS3HangingMeetsTheDeadline(t *testing.T) {
	s := newStack(t)
	const n = 500
	s.publish(t, n)
	p := s.run(t)
	t0 := time.Now()
	waitFor(t, 30*time.Second, "all events fetched", func() bool { return p.metric("jetsink_events_received_total") == n })
	t.Logf("fetched after %s", time.Since(t0))
	s.proxy.Set("", s3test.Fault{Delay: time.Minute})
	took := p.terminate(t, s.cfg.ShutdownTimeout)
	t.Logf("exited %s after SIGTERM", took)
	if took < s.cfg.ShutdownTimeout/2 {
		t.Errorf("exited after %s: the uploads were meant to hang until the deadline", took)
	}
	rec := p.stopped(t)
	if rec["timed_out"] != true || rec["nacked"] != float64(n) {
		t.Errorf("exit log %v, want timed_out true, nacked %d", rec, n)
	}
	if floor := s.consumer(t).AckFloor.Stream; floor != 0 {
		t.Errorf("ack floor %d: events were ACKed without being written", floor)
	}
	s.proxy.Clear()
	if keys := s.s3.List(t, "lake", ""); len(keys) != 0 {
		t.Errorf("objects written: %v", keys)
	}
}
