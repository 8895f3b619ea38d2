package sinkworker

import (
	"fmt"
	"runtime"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsink/jetsink/internal/testutil/s3test"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// Poison events go to the dead-letter subject with headers that say why and
// where from, are Term'd (never redelivered) and counted; the good events
// around them are all written.
func TestPoisonIsDeadLetteredAndTerminated(t *testing.T) {
	e := newEnv(t)
	e.nats.CreateStream(t, "DLQ", "dlq.events")
	e.cfg.DeadLetterSubject = "dlq.events"
	poisons := []struct {
		body, reason string
	}{
		{`{"app_id":"shop","event":"x","timestamp":`, reasonInvalidJSON},
		{`not json at all`, reasonInvalidJSON},
		{`{"event":"x","timestamp":1700000000000}`, reasonMissingAppID},
		{`{"app_id":"a/b","event":"x","timestamp":1700000000000}`, reasonInvalidAppID},
		{`{"app_id":"shop","timestamp":1700000000000}`, reasonMissingEvent},
		{`{"app_id":"shop","event":"x"}`, reasonMissingTimestamp},
		{`{"app_id":"shop","event":"x","timestamp":"yesterday"}`, reasonInvalidTimestamp},
		{`{"app_id":"shop","event":"x","timestamp":1700000000000,"properties":[1]}`, reasonInvalidField},
		{`{"app_id":7,"event":"x","timestamp":1700000000000}`, reasonInvalidField},
	}
	good := makeEvents(400, []string{"shop", "blog"}, 2)
	for i, ev := range good {
		e.publishRaw("events."+ev.App, ev.body(i))
		if i%40 == 0 && i/40 < len(poisons) {
			e.publishRaw("events.bad", []byte(poisons[i/40].body))
		}
	}
	e.waitPublished()
	w := e.start(Backoff{})

	eventually(t, 20*time.Second, "good events ACKed and poison terminated", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(good)) &&
			metric(t, w.reg, "jetsink_events_terminated_total") == float64(len(poisons))
	})
	w.stop(t)
	e.checkWritten(good)

	wantReasons := map[string]int{}
	for _, p := range poisons {
		wantReasons[p.reason]++
	}
	for reason, n := range wantReasons {
		if got := metric(t, w.reg, "jetsink_events_terminated_total", "reason", reason); got != float64(n) {
			t.Errorf("terminated{reason=%s} = %v, want %d", reason, got, n)
		}
	}
	if got := metric(t, w.reg, "jetsink_events_dead_lettered_total"); got != float64(len(poisons)) {
		t.Errorf("dead_lettered = %v, want %d", got, len(poisons))
	}

	// Every poison event is on the dead-letter stream, body intact, with
	// headers naming the reason and the original message.
	dlq, err := e.js.OrderedConsumer(t.Context(), "DLQ", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := dlq.Fetch(len(poisons)+1, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]jetstream.Msg{}
	for m := range batch.Messages() {
		got[string(m.Data())] = m
	}
	if len(got) != len(poisons) {
		t.Errorf("dead-letter stream holds %d messages, want %d", len(got), len(poisons))
	}
	for _, p := range poisons {
		m, ok := got[p.body]
		if !ok {
			t.Errorf("poison %q not dead-lettered", p.body)
			continue
		}
		h := m.Headers()
		seq, _ := strconv.Atoi(h.Get(HeaderStreamSeq))
		if h.Get(HeaderError) != p.reason || h.Get(HeaderSubject) != "events.bad" || seq <= 0 ||
			h.Get(HeaderDeliveries) != "1" || h.Get(HeaderStream) != testStream {
			t.Errorf("poison %q dead-lettered with headers %v", p.body, h)
		}
	}
	info := e.consumer()
	if info.NumPending != 0 || info.NumAckPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("consumer: pending %d, ack pending %d, redelivered %d; want 0 (poison Term'd, not redelivered)",
			info.NumPending, info.NumAckPending, info.NumRedelivered)
	}
}

// A dead letter is durable or it does not happen: with a dead-letter
// subject that no stream captures, poison is neither Term'd nor counted as
// dead-lettered; it stays in the source stream, the worker says why, and
// once a stream captures the subject it is dead-lettered there.
func TestPoisonWaitsForADeadLetterStream(t *testing.T) {
	e := newEnv(t)
	e.cfg.DeadLetterSubject = "dlq.later"
	e.publishRaw("events.bad", []byte(`{"app_id":"shop"}`))
	e.publish(makeEvents(10, []string{"shop"}, 1))
	w := e.start(Backoff{Base: 200 * time.Millisecond, Max: 500 * time.Millisecond})
	eventually(t, 10*time.Second, "good events ACKed, dead letter refused", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == 10 &&
			metric(t, w.reg, "jetsink_dead_letter_errors_total") >= 2
	})
	if got := metric(t, w.reg, "jetsink_events_terminated_total"); got != 0 {
		t.Fatalf("%v poison events Term'd with no stream holding a copy", got)
	}
	if got := metric(t, w.reg, "jetsink_events_dead_lettered_total"); got != 0 {
		t.Errorf("dead_lettered = %v with no stream behind the subject", got)
	}
	if got := metric(t, w.reg, "jetsink_dead_letter_stream_missing"); got != 1 {
		t.Errorf("dead_letter_stream_missing = %v, want 1", got)
	}
	if info := e.consumer(); info.NumAckPending != 1 {
		t.Errorf("consumer: %d ack pending, want the poison event still held by the stream", info.NumAckPending)
	}

	e.nats.CreateStream(t, "DLQ", "dlq.later")
	eventually(t, 10*time.Second, "poison dead-lettered once a stream captures the subject", func() bool {
		return metric(t, w.reg, "jetsink_events_dead_lettered_total") == 1 &&
			metric(t, w.reg, "jetsink_events_terminated_total", "reason", reasonMissingEvent) == 1
	})
	if got := metric(t, w.reg, "jetsink_dead_letter_stream_missing"); got != 0 {
		t.Errorf("dead_letter_stream_missing = %v after the stream appeared", got)
	}
	st, err := e.js.Stream(t.Context(), "DLQ")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(t.Context()); err != nil || info.State.Msgs != 1 {
		t.Errorf("dead-letter stream: %+v, %v; want the one poison event", info, err)
	}
}

// An S3 outage is not the events' fault: for far longer than AckWait ×
// MaxDeliver, nothing is ACKed, NAKed, redelivered or dead-lettered; the
// batches stay held and leased and their uploads are retried in place, and
// once S3 recovers every event is written, none lost.
func TestS3OutageLosesNothing(t *testing.T) {
	e := newEnv(t)
	e.nats.CreateStream(t, "DLQ", "dlq.events")
	e.cfg.DeadLetterSubject = "dlq.events"
	e.cfg.AckWait = time.Second
	e.cfg.BatchMaxAge = 200 * time.Millisecond
	e.cfg.MaxDeliver = 2
	e.proxy.Set("", s3test.Fault{Status: 503})
	evs := makeEvents(600, []string{"shop", "blog"}, 2)
	e.publish(evs)
	w := e.start(Backoff{Base: 100 * time.Millisecond, Max: 400 * time.Millisecond})

	outage := 5 * time.Second // 2.5 × AckWait × MaxDeliver
	time.Sleep(outage)
	if got := metric(t, w.reg, "jetsink_events_acked_total"); got != 0 {
		t.Fatalf("%v events ACKed while S3 was failing", got)
	}
	if keys := e.s3.List(t, testBucket, ""); len(keys) != 0 {
		t.Fatalf("objects written while S3 was failing: %v", keys)
	}
	for _, name := range []string{"jetsink_events_nacked_total", "jetsink_events_terminated_total", "jetsink_events_dead_lettered_total"} {
		if got := metric(t, w.reg, name); got != 0 {
			t.Errorf("%s = %v during an S3 outage: deliveries were spent on a sink-side failure", name, got)
		}
	}
	if got := metric(t, w.reg, "jetsink_events_received_total"); got != float64(len(evs)) {
		t.Errorf("%v deliveries of %d events: events were redelivered during the outage", got, len(evs))
	}
	if metric(t, w.reg, "jetsink_upload_retries_total") == 0 || metric(t, w.reg, "jetsink_upload_attempts_total", "outcome", uploadError) == 0 {
		t.Error("failed uploads not retried or not counted")
	}
	if e.proxy.Faults() == 0 || metric(t, w.reg, "jetsink_s3_errors_total", "operation", "PutObject") == 0 {
		t.Error("S3 errors not seen or not counted")
	}
	if metric(t, w.reg, "jetsink_oldest_unwritten_batch_age_seconds") < 3 {
		t.Error("oldest_unwritten_batch_age_seconds does not show the outage")
	}
	if info := e.consumer(); info.AckFloor.Stream != 0 || info.NumRedelivered != 0 {
		t.Errorf("consumer during the outage: ack floor %d, redelivered %d", info.AckFloor.Stream, info.NumRedelivered)
	}

	e.proxy.Clear()
	eventually(t, 30*time.Second, "every event written after recovery", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	w.stop(t)
	e.checkWritten(evs)
	if info := e.consumer(); info.NumPending != 0 || info.NumAckPending != 0 {
		t.Errorf("consumer after recovery: pending %d, ack pending %d", info.NumPending, info.NumAckPending)
	}
}

// One partition whose uploads fail does not hold back the others.
func TestFailingPartitionIsIsolated(t *testing.T) {
	e := newEnv(t)
	e.proxy.Set(testPrefix+"app_id=broken/", s3test.Fault{Status: 500})
	evs := makeEvents(900, []string{"shop", "broken", "blog"}, 2)
	var ok, broken []testEvent
	for _, ev := range evs {
		if ev.App == "broken" {
			broken = append(broken, ev)
		} else {
			ok = append(ok, ev)
		}
	}
	e.publish(evs)
	w := e.start(Backoff{Base: 200 * time.Millisecond, Max: time.Second})

	eventually(t, 20*time.Second, "healthy partitions ACKed", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(ok))
	})
	for _, key := range e.s3.List(t, testBucket, "") {
		if strings.Contains(key, "app_id=broken/") {
			t.Errorf("broken partition written: %s", key)
		}
	}
	eventually(t, 20*time.Second, "failing partition's uploads retried", func() bool {
		return metric(t, w.reg, "jetsink_upload_retries_total") >= 3
	})
	if got := metric(t, w.reg, "jetsink_events_acked_total"); got != float64(len(ok)) {
		t.Errorf("%v events ACKed, want only the %d of healthy partitions", got, len(ok))
	}
	e.checkWritten(ok)

	e.proxy.Clear()
	eventually(t, 20*time.Second, "failing partition written after recovery", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	w.stop(t)
	e.checkWritten(evs)
}

// A batch that waits longer than half of AckWait (here: an upload that
// hangs for 2.5x AckWait) is kept leased, so JetStream does not redeliver
// it behind the worker's back.
func TestWaitingBatchIsKeptLeased(t *testing.T) {
	e := newEnv(t)
	e.cfg.AckWait = time.Second
	e.cfg.BatchMaxAge = 200 * time.Millisecond
	e.proxy.Set("", s3test.Fault{Delay: 2500 * time.Millisecond})
	evs := makeEvents(200, []string{"shop"}, 1)
	e.publish(evs)
	w := e.start(Backoff{})

	eventually(t, 20*time.Second, "events ACKed after the slow upload", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	w.stop(t)
	if got := metric(t, w.reg, "jetsink_events_lease_renewals_total"); got < float64(len(evs)) {
		t.Errorf("%v lease renewals, want every waiting event leased", got)
	}
	if got := metric(t, w.reg, "jetsink_events_received_total"); got != float64(len(evs)) {
		t.Errorf("received %v deliveries of %d events: events were redelivered while their batch waited", got, len(evs))
	}
	if info := e.consumer(); info.NumRedelivered != 0 {
		t.Errorf("consumer redelivered %d events", info.NumRedelivered)
	}
	e.checkWritten(evs)
}

// A backlog many times MaxBufferedBytes is written while the bytes held in
// memory never exceed the cap: fetching waits for uploads instead.
func TestMemoryStaysBounded(t *testing.T) {
	e := newEnv(t)
	e.cfg.MaxBufferedBytes = 256 << 10
	e.cfg.BatchMaxBytes = 128 << 10 // 4 partitions x 128KiB > cap: the cap, not size, cuts
	e.cfg.BatchMaxEvents = 100000
	e.cfg.BatchMaxAge = 500 * time.Millisecond
	e.cfg.Workers = 4
	// Slow uploads make the backlog pile up against the cap.
	e.proxy.Set("", s3test.Fault{Delay: 5 * time.Millisecond})
	evs := makeEvents(4000, []string{"a", "b"}, 2)
	e.publish(evs)
	backlog := 0
	for i, ev := range evs {
		backlog += int(eventSize(ev.body(i)) + rowSize + msgSize)
	}
	if backlog < 10*int(e.cfg.MaxBufferedBytes) {
		t.Fatalf("backlog %d is not many times the cap", backlog)
	}
	w := e.start(Backoff{})
	eventually(t, 60*time.Second, "backlog written", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	w.stop(t)
	peak := metric(t, w.reg, "jetsink_buffered_bytes_peak")
	t.Logf("files %v, memory cuts %v, flush seconds sum n=%v", metric(t, w.reg, "jetsink_files_written_total"),
		metric(t, w.reg, "jetsink_flushes_total", "reason", flushMemory), metric(t, w.reg, "jetsink_flush_duration_seconds"))
	t.Logf("backlog %d bytes, cap %d, peak buffered %v (%.0f%% of cap)", backlog, e.cfg.MaxBufferedBytes, peak,
		100*peak/float64(e.cfg.MaxBufferedBytes))
	if peak > float64(e.cfg.MaxBufferedBytes) {
		t.Errorf("peak buffered bytes %v exceeded MaxBufferedBytes %d", peak, e.cfg.MaxBufferedBytes)
	}
	if peak < float64(e.cfg.MaxBufferedBytes)/4 {
		t.Errorf("peak buffered bytes %v: the test never pressed against the cap", peak)
	}
	if metric(t, w.reg, "jetsink_flushes_total", "reason", flushMemory) == 0 {
		t.Error("no flush was triggered by the memory cap")
	}
	e.checkWritten(evs)
}

// With no dead-letter subject, poison is Term'd and counted, never redelivered.
func TestPoisonWithoutDeadLetterSubject(t *testing.T) {
	e := newEnv(t)
	e.publishRaw("events.bad", []byte(`{"app_id":"shop","event":"x","timestamp":"soon"}`))
	e.publish(makeEvents(10, []string{"shop"}, 1))
	w := e.start(Backoff{})
	eventually(t, 10*time.Second, "poison terminated, good ACKed", func() bool {
		return metric(t, w.reg, "jetsink_events_terminated_total", "reason", reasonInvalidTimestamp) == 1 &&
			metric(t, w.reg, "jetsink_events_acked_total") == 10
	})
	time.Sleep(200 * time.Millisecond)
	if info := e.consumer(); info.NumAckPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("consumer: ack pending %d, redelivered %d", info.NumAckPending, info.NumRedelivered)
	}
	if got := metric(t, w.reg, "jetsink_events_dead_lettered_total"); got != 0 {
		t.Errorf("dead_lettered = %v without a dead-letter subject", got)
	}
}

// An open batch waiting for BatchMaxAge longer than the consumer's AckWait
// (the operator's consumer may have a shorter one than the worker was told)
// is kept leased too: nothing is redelivered while it waits.
func TestOpenBatchIsKeptLeased(t *testing.T) {
	e := newEnv(t)
	theirs := e.cfg.ConsumerConfig()
	theirs.AckWait = time.Second
	if _, err := e.js.CreateConsumer(t.Context(), testStream, theirs); err != nil {
		t.Fatal(err)
	}
	e.cfg.BatchMaxAge = 3 * time.Second // three times the consumer's AckWait
	evs := makeEvents(100, []string{"shop"}, 1)
	e.publish(evs)
	w := e.start(Backoff{})
	eventually(t, 15*time.Second, "events ACKed after BatchMaxAge", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	w.stop(t)
	if got := metric(t, w.reg, "jetsink_events_received_total"); got != float64(len(evs)) {
		t.Errorf("received %v deliveries of %d events: redelivered while the batch was open", got, len(evs))
	}
	if info := e.consumer(); info.NumRedelivered != 0 {
		t.Errorf("consumer redelivered %d events", info.NumRedelivered)
	}
	e.checkWritten(evs)
}

// What the batcher counts against MaxBufferedBytes is what the events
// really hold on the heap, so the cap bounds the pod's memory: measured
// with every event of a backlog held in open batches.
func TestBufferedBytesMatchTheHeap(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes what memory holds")
	}
	t.Run("envelope", func(t *testing.T) { bufferedBytesMatchTheHeap(t, nil) })
	// A declared schema holds a block of values per event besides the body.
	t.Run("declared", func(t *testing.T) { bufferedBytesMatchTheHeap(t, benchSchema()) })
}

func bufferedBytesMatchTheHeap(t *testing.T, schema *config.Schema) {
	e := newEnv(t)
	e.cfg.Schema = schema
	e.cfg.BatchMaxEvents = 100000
	e.cfg.BatchMaxAge = time.Hour
	e.cfg.AckWait = 2 * time.Hour
	e.cfg.Workers = 4
	// A memory stream: a file stream's block cache fills as the consumer
	// reads, and that is the in-process server's memory, not the worker's.
	if err := e.js.DeleteStream(t.Context(), testStream); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.CreateStream(t.Context(), jetstream.StreamConfig{Name: testStream, Subjects: []string{"events.>"},
		Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	evs := makeEvents(60000, []string{"a", "b", "c", "d", "e"}, 24)
	for i, ev := range evs {
		// Even bodies only: their timestamps are the RFC 3339 benchSchema reads.
		e.publishRaw("events."+ev.App, ev.body(2*i))
	}
	e.waitPublished()
	before := liveHeap()
	w := e.start(Backoff{})
	eventually(t, 30*time.Second, "every event buffered", func() bool {
		return metric(t, w.reg, "jetsink_events_received_total") == float64(len(evs))
	})
	grown := float64(liveHeap()) - float64(before)
	counted := metric(t, w.reg, "jetsink_buffered_bytes")
	// The heap growth also holds the in-process NATS server's state for
	// 60,000 unacknowledged messages, which a real pod does not.
	// Tight enough to catch a body held twice again (+184 B an event here).
	if grown > 1.1*counted || grown < 0.8*counted {
		t.Errorf("holding %d events grew the heap by %.1f MiB, but %.1f MiB are counted against the cap",
			len(evs), grown/(1<<20), counted/(1<<20))
	}
	t.Logf("heap +%.0f B/event, counted %.0f B/event", grown/float64(len(evs)), counted/float64(len(evs)))
}

// liveHeap is the heap's live bytes after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	s := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}

// Messages the pull iterator prefetched while the memory cap keeps its
// fetcher waiting are taken in and leased: an upload hanging for several
// AckWaits, with a budget full after a few events, redelivers nothing.
func TestPrefetchedMessagesStayLeasedBehindTheCap(t *testing.T) {
	e := newEnv(t)
	e.cfg.AckWait = time.Second
	e.cfg.BatchMaxAge = 200 * time.Millisecond
	e.cfg.Workers = 1
	e.cfg.FetchBatchSize = 500
	e.cfg.MaxBufferedBytes = 64 << 10 // a few dozen events
	e.cfg.BatchMaxBytes = 32 << 10
	e.proxy.Set("", s3test.Fault{Delay: 3500 * time.Millisecond})
	evs := makeEvents(400, []string{"shop"}, 1)
	e.publish(evs)
	w := e.start(Backoff{})
	eventually(t, 60*time.Second, "every event written", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	w.stop(t)
	if info := e.consumer(); info.NumRedelivered != 0 {
		t.Errorf("consumer redelivered %d events that waited behind the cap", info.NumRedelivered)
	}
	if got := metric(t, w.reg, "jetsink_events_received_total"); got != float64(len(evs)) {
		t.Errorf("received %v deliveries of %d events", got, len(evs))
	}
	e.checkWritten(evs)
}

// Thousands of one-event partitions are counted for what they hold,
// pre-allocated slices included: the heap grows by about what is counted.
func TestManyPartitionsAreCountedForWhatTheyHold(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes what memory holds")
	}
	cfg := config.Default()
	cfg.MaxBufferedBytes = 1 << 40
	b := testBatcher(cfg)
	const partitions = 5000
	rows := make([]Row, partitions)
	for i := range rows {
		rows[i] = Row{AppID: fmt.Sprintf("app-%04d", i), Event: "x", Timestamp: time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)}
	}
	before := liveHeap()
	for i := range rows {
		b.add(&rows[i], trackedMsg{seq: uint64(i)}, 100, time.Now())
	}
	grown := float64(liveHeap()) - float64(before)
	_, counted, _ := b.stats()
	t.Logf("%d partitions: heap +%.1f MiB, counted %.1f MiB", partitions, grown/(1<<20), float64(counted)/(1<<20))
	if grown > 1.25*float64(counted) {
		t.Errorf("%d one-event partitions grew the heap by %.1f MiB, but only %.1f MiB are counted against the cap",
			partitions, grown/(1<<20), float64(counted)/(1<<20))
	}
	runtime.KeepAlive(b)
}
