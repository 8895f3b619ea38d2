package sinkworker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"
)

var keyPattern = regexp.MustCompile(`^events/app_id=[a-z0-9-]+/date=\d{4}-\d{2}-\d{2}/hour=\d{2}/EVENTS\.[0-9a-f]+-warehouse-(\d+)-(\d+)\.parquet$`)

// Every published event ends up in S3 exactly once, in the file of its
// partition, and the consumer is left with nothing pending.
func TestWritesEveryEventOnceInItsPartition(t *testing.T) {
	e := newEnv(t)
	evs := makeEvents(3000, []string{"shop", "blog", "game-1"}, 4)
	e.publish(evs)
	w := e.start(Backoff{})

	eventually(t, 30*time.Second, "every event ACKed", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	w.stop(t)

	files := e.checkWritten(evs)
	// 12 partitions of 250 events, BatchMaxEvents 500: few files, not one per event.
	if files < 12 || files > 60 {
		t.Errorf("%d files for 12 partitions", files)
	}
	for key := range e.objects() {
		if !keyPattern.MatchString(key) {
			t.Errorf("key %q does not follow <prefix>app_id=/date=/hour=/<stream>-<consumer>-<first>-<last>.parquet", key)
		}
	}
	info := e.consumer()
	if info.NumPending != 0 || info.NumAckPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("consumer after run: pending %d, ack pending %d, redelivered %d; want all 0",
			info.NumPending, info.NumAckPending, info.NumRedelivered)
	}
	if got := metric(t, w.reg, "jetsink_file_rows_total"); got != float64(len(evs)) {
		t.Errorf("jetsink_file_rows_total = %v, want %d", got, len(evs))
	}
}

// A backlog of past hours is written as soon as the consumer has delivered
// all of it, not BatchMaxAge later: a user replaying yesterday's events
// sees them in the lake and the Lag at zero within seconds.
func TestFinishedBacklogIsWrittenBeforeMaxAge(t *testing.T) {
	e := newEnv(t)
	e.cfg.BatchMaxEvents = 10000
	e.cfg.BatchMaxAge = time.Hour
	e.cfg.AckWait = 2 * time.Hour
	evs := makeEvents(2000, []string{"shop", "blog"}, 3)
	e.publish(evs)
	w := e.start(Backoff{})

	eventually(t, 20*time.Second, "every event ACKed", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	if files := e.checkWritten(evs); files != 6 {
		t.Errorf("%d files for 6 partitions, want one each", files)
	}
	// Cut because the consumer was caught up, or because the stream had
	// moved on: both say "nothing more is coming for this hour".
	caughtUp := metric(t, w.reg, "jetsink_flushes_total", "reason", flushCaughtUp)
	idle := metric(t, w.reg, "jetsink_flushes_total", "reason", flushIdle)
	if caughtUp+idle != 6 {
		t.Errorf("%v batches cut as caught_up and %v as idle, want 6 in all", caughtUp, idle)
	}
}

// The files carry the documented schema: microsecond UTC timestamps that
// query engines read as instants, JSON strings, and provenance columns.
func TestParquetSchema(t *testing.T) {
	enc, err := newEncoder("zstd", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	rows := []Row{{AppID: "a", Event: "e", Timestamp: ts, Properties: `{"k":1}`, Subject: "events.a", StreamSeq: 7, ReceivedAt: ts},
		{AppID: "a", Event: "e", Timestamp: ts, UserID: "u", Subject: "events.a", StreamSeq: 8, ReceivedAt: ts}}
	var buf bytes.Buffer
	// Twice through the pooled writer: the second file must be as good.
	for range 2 {
		buf.Reset()
		if err := enc.encode(&buf, rows); err != nil {
			t.Fatal(err)
		}
	}
	f, err := parquet.OpenFile(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"event_id": "optional", "app_id": "required", "event": "required", "timestamp": "TIMESTAMP(isAdjustedToUTC=true,unit=MICROS)",
		"user_id": "optional", "anonymous_id": "optional", "session_id": "optional", "properties": "STRING optional", "context": "STRING optional",
		"_subject": "required", "_stream_seq": "INT(64,true)", "_received_at": "TIMESTAMP(isAdjustedToUTC=true,unit=MICROS)",
	}
	got := map[string]string{}
	for _, field := range f.Schema().Fields() {
		desc := field.Type().String()
		if field.Optional() {
			desc += " optional"
		}
		got[field.Name()] = desc
	}
	for col, w := range want {
		if w == "required" {
			if strings.Contains(got[col], "optional") || got[col] == "" {
				t.Errorf("column %s = %q, want required", col, got[col])
			}
			continue
		}
		if !strings.Contains(got[col], w) {
			t.Errorf("column %s = %q, want %s", col, got[col], w)
		}
	}
	back, err := parquet.Read[Row](bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 || !back[0].Timestamp.Equal(ts.Truncate(time.Microsecond)) || back[0].Properties != `{"k":1}` || back[1].UserID != "u" || back[0].UserID != "" {
		t.Errorf("read back %+v", back)
	}
}

func TestObjectKey(t *testing.T) {
	key := partitionKey{app: "shop", bucket: time.Date(2026, 3, 14, 7, 0, 0, 0, time.UTC).Unix()}
	if got, want := objectKey("events/", "EVENTS.1", "warehouse", "app_id="+key.app, key.bucket, "hour", 10, 250), "events/app_id=shop/date=2026-03-14/hour=07/EVENTS.1-warehouse-10-250.parquet"; got != want {
		t.Errorf("hour key = %s, want %s", got, want)
	}
	if got, want := streamIncarnation("EVENTS", time.Unix(0, 0x18b2c3d4e5f60718)), "EVENTS.18b2c3d4e5f60718"; got != want {
		t.Errorf("incarnation = %s, want %s", got, want)
	}
	key.bucket = time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC).Unix()
	if got, want := objectKey("", "EVENTS.1", "warehouse", "app_id="+key.app, key.bucket, "day", 1, 1), "app_id=shop/date=2026-03-14/EVENTS.1-warehouse-1-1.parquet"; got != want {
		t.Errorf("day key = %s, want %s", got, want)
	}
}

// A large backlog goes through one worker process at a useful rate; the
// rate is logged for the benchmark record (go test -v -run Throughput).
func TestThroughput(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("large backlog; its rate means nothing under -race")
	}
	e := newEnv(t)
	e.cfg.Workers = 4
	e.cfg.AckWait = 30 * time.Second
	e.cfg.BatchMaxEvents = 10000
	e.cfg.BatchMaxAge = 200 * time.Millisecond
	e.cfg.Endpoint = e.s3.URL // no proxy hop
	n := 100000
	if s := os.Getenv("JETSINK_THROUGHPUT_EVENTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	evs := makeEvents(n, []string{"shop", "blog", "game"}, 2)
	e.publish(evs)
	cpu0 := processCPU()
	raw := rawConsumeRate(t, e, len(evs))
	rawCPU := processCPU() - cpu0
	// JETSINK_THROUGHPUT_CPUPROFILE profiles the worker's run only, not the
	// publishing, the reference or the read-back.
	if path := os.Getenv("JETSINK_THROUGHPUT_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	cpu0 = processCPU()
	start := time.Now()
	w := e.start(Backoff{})
	var first, fetched time.Duration
	trace := os.Getenv("JETSINK_THROUGHPUT_TRACE") != ""
	lastTrace, lastCPU := time.Now(), processCPU()
	eventually(t, 90*time.Second, "backlog written", func() bool {
		received := metric(t, w.reg, "jetsink_events_received_total")
		if trace && time.Since(lastTrace) >= 100*time.Millisecond {
			cpu := processCPU()
			_, buffered, _ := w.batcher.stats()
			t.Logf("%6s received %6.0f acked %6.0f files %3.0f buffered %8d cpu %3.0f%%", time.Since(start).Round(time.Millisecond), received,
				metric(t, w.reg, "jetsink_events_acked_total"), metric(t, w.reg, "jetsink_files_written_total"), buffered,
				100*float64(cpu-lastCPU)/float64(time.Since(lastTrace)))
			lastTrace, lastCPU = time.Now(), cpu
		}
		if first == 0 && received > 0 {
			first = time.Since(start)
		}
		if fetched == 0 && received == float64(len(evs)) {
			fetched = time.Since(start)
		}
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	elapsed := time.Since(start)
	workerCPU := processCPU() - cpu0
	pprof.StopCPUProfile()
	t.Logf("first event after %s, all fetched after %s", first, fetched)
	// CPU time of the whole test process (NATS server included) per event:
	// less sensitive than rates to what else runs on a shared machine.
	t.Logf("process CPU per event: %.1fµs with the worker, %.1fµs for the raw consume+ACK",
		float64(workerCPU.Microseconds())/float64(len(evs)), float64(rawCPU.Microseconds())/float64(len(evs)))
	w.stop(t)
	rate := float64(len(evs)) / elapsed.Seconds()
	t.Logf("%d events in %s: %.0f events/s (%.2fx the raw consume+ACK rate of %.0f msg/s), %v files, peak buffered %v bytes",
		len(evs), elapsed.Round(time.Millisecond), rate, rate/raw, raw,
		metric(t, w.reg, "jetsink_files_written_total"), metric(t, w.reg, "jetsink_buffered_bytes_peak"))
	e.checkWritten(evs)
	// Far below the target; only a gross regression (a per-event round
	// trip, a lock held across an upload) would fail this.
	if rate < 5000 {
		t.Errorf("%.0f events/s", rate)
	}
}

// Outside Kubernetes the worker waits for its stream, creates its consumer
// from ConsumerConfig, and says so on /readyz; /healthz and /metrics are
// served from the start.
func TestReadinessAndConsumerCreation(t *testing.T) {
	e := newEnv(t)
	e.cfg.Stream = "LATER"
	e.cfg.FilterSubjects = []string{"later.>"}
	w := e.start(Backoff{})
	base := "http://" + w.MetricsAddr()
	status := func(path string) int {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("/healthz"); got != http.StatusOK {
		t.Errorf("/healthz = %d", got)
	}
	time.Sleep(300 * time.Millisecond)
	if got := status("/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d before the stream exists, want 503", got)
	}
	e.nats.CreateStream(t, "LATER", "later.>")
	eventually(t, 10*time.Second, "/readyz 200 once bound", func() bool { return status("/readyz") == http.StatusOK })

	c, err := e.js.Consumer(t.Context(), "LATER", e.cfg.Consumer)
	if err != nil {
		t.Fatalf("consumer not created: %v", err)
	}
	cc := c.CachedInfo().Config
	if cc.Durable != e.cfg.Consumer || cc.AckPolicy != jetstream.AckExplicitPolicy || cc.AckWait != e.cfg.AckWait ||
		cc.FilterSubject != "later.>" || cc.MaxDeliver != -1 {
		t.Errorf("created consumer %+v does not match ConsumerConfig", cc)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"jetsink_events_received_total", "jetsink_buffered_bytes", "jetsink_flushes_total{reason=\"max_age\"}",
		"jetsink_s3_errors_total{operation=\"PutObject\"}", "jetsink_open_partitions"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	w.stop(t)
	if got := status("/readyz"); got == http.StatusOK {
		t.Error("/readyz still 200 after shutdown")
	}
}

// rawConsumeRate is the reference the worker is measured against, taken on
// the same server and machine: the same number of goroutines pulling from
// a fresh consumer and ACKing each message at once, doing nothing else
// (what `nats bench js consume` measures).
// processCPU is the user+system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rawConsumeRate(t *testing.T, e *env, n int) float64 {
	t.Helper()
	c, err := e.js.CreateConsumer(t.Context(), testStream, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.js.DeleteConsumer(context.Background(), testStream, "raw")
	var got atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range e.cfg.Workers {
		it, err := c.Messages(jetstream.PullMaxMessages(e.cfg.FetchBatchSize))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for {
				m, err := it.Next()
				if err != nil {
					return
				}
				_ = m.Ack()
				if got.Add(1) == int64(n) {
					e.nc.Flush()
				}
			}
		})
		defer it.Stop()
	}
	eventually(t, 60*time.Second, "raw consume", func() bool { return got.Load() >= int64(n) })
	return float64(n) / time.Since(start).Seconds()
}

// An existing consumer belongs to the operator: the worker binds to it as it
// is and never rewrites it.
func TestExistingConsumerIsNotUpdated(t *testing.T) {
	e := newEnv(t)
	theirs := e.cfg.ConsumerConfig()
	theirs.AckWait = 20 * time.Second
	theirs.MaxDeliver = 3
	if _, err := e.js.CreateConsumer(t.Context(), testStream, theirs); err != nil {
		t.Fatal(err)
	}
	evs := makeEvents(50, []string{"shop"}, 1)
	e.publish(evs)
	w := e.start(Backoff{})
	eventually(t, 10*time.Second, "events ACKed", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	if cc := e.consumer().Config; cc.AckWait != theirs.AckWait || cc.MaxDeliver != theirs.MaxDeliver {
		t.Errorf("consumer rewritten: AckWait %s MaxDeliver %d, want %s %d", cc.AckWait, cc.MaxDeliver, theirs.AckWait, theirs.MaxDeliver)
	}
	if w.batcher.leaseAfter != theirs.AckWait/2 {
		t.Errorf("leases every %s, want half the consumer's AckWait (%s)", w.batcher.leaseAfter, theirs.AckWait/2)
	}
}

// A consumer whose MaxAckPending is below what the batches would hold does
// not stall the sink until BatchMaxAge: reaching it writes the open batches.
func TestMaxAckPendingDoesNotStall(t *testing.T) {
	e := newEnv(t)
	e.cfg.MaxAckPending = 100
	e.cfg.BatchMaxEvents = 10000
	e.cfg.BatchMaxAge = 20 * time.Second
	e.cfg.AckWait = 30 * time.Second
	evs := makeEvents(600, []string{"shop", "blog"}, 1)
	e.publish(evs)
	w := e.start(Backoff{})
	eventually(t, 15*time.Second, "events ACKed well before BatchMaxAge", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	if got := metric(t, w.reg, "jetsink_flushes_total", "reason", flushAckPending); got == 0 {
		t.Error("no flush was triggered by MaxAckPending")
	}
	w.stop(t)
	e.checkWritten(evs)
}

// A consumer deleted under a running worker is noticed: /readyz fails, the
// worker writes what it holds and Run returns an error (the process exits
// non-zero, so Kubernetes restarts it). Under the operator
// (CreateConsumer false) the restarted worker does not re-create the
// consumer: it waits, unready, until the operator has, then consumes again.
func TestDeletedConsumerEndsTheWorker(t *testing.T) {
	e := newEnv(t)
	e.cfg.CreateConsumer = false
	if _, err := e.js.CreateConsumer(t.Context(), testStream, e.cfg.ConsumerConfig()); err != nil {
		t.Fatal(err)
	}
	first := makeEvents(200, []string{"shop"}, 1)
	e.publish(first)
	w := e.start(Backoff{})
	eventually(t, 10*time.Second, "first events ACKed", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(first))
	})
	if err := e.js.DeleteConsumer(t.Context(), testStream, e.cfg.Consumer); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.done:
		if err == nil {
			t.Fatal("Run returned nil after its consumer was deleted; want an error (a non-zero exit)")
		}
		t.Logf("Run: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("worker still running 15 s after its consumer was deleted")
	}
	w.once.Do(func() {}) // already stopped

	// The restart: no consumer yet, and the worker must not make one.
	again := e.start(Backoff{})
	time.Sleep(2500 * time.Millisecond)
	if _, err := e.js.Consumer(t.Context(), testStream, e.cfg.Consumer); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("consumer after a restart without CreateConsumer: %v; want it not re-created", err)
	}
	if why := again.notReady(); why == "" {
		t.Error("ready without a consumer")
	}
	// The operator re-creates it from where the stream is now.
	cc := e.cfg.ConsumerConfig()
	cc.DeliverPolicy = jetstream.DeliverNewPolicy
	if _, err := e.js.CreateConsumer(t.Context(), testStream, cc); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "ready once the consumer is back", func() bool { return again.notReady() == "" })
	second := makeEvents(100, []string{"blog"}, 1)
	for i := range second {
		second[i].ID = "after-" + second[i].ID
	}
	e.publish(second)
	eventually(t, 10*time.Second, "new events ACKed", func() bool {
		return metric(t, again.reg, "jetsink_events_acked_total") == float64(len(second))
	})
	again.stop(t)
	e.checkWritten(append(first, second...))
}
