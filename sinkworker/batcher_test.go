package sinkworker

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// A partition's next batch starts with the capacity its last one needed,
// never above BatchMaxEvents, and the hints stay bounded.
func TestBatchCapacityFollowsThePartitionsLastBatch(t *testing.T) {
	cfg := config.Default()
	cfg.BatchMaxEvents = 1000
	b := testBatcher(cfg)
	now := time.Now()
	row := Row{AppID: "shop", Event: "x", Timestamp: time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)}
	for i := range cfg.BatchMaxEvents + 1 {
		if !b.add(&row, trackedMsg{seq: uint64(i)}, 100, now) {
			t.Fatal("add refused")
		}
	}
	key := partitionKey{app: "shop", bucket: row.Timestamp.Unix()}
	if len(b.ready) != 1 || b.ready[0].reason != flushMaxEvents {
		t.Fatalf("%d ready batches, want 1 cut on max_events", len(b.ready))
	}
	if bt := b.open[key]; bt == nil || len(bt.rows) != 1 || cap(bt.rows) != cfg.BatchMaxEvents || cap(bt.msgs) != cfg.BatchMaxEvents {
		t.Fatalf("next batch: %+v", bt)
	}
	if len(b.sizeHint) != 0 {
		t.Errorf("hint kept after use: %v", b.sizeHint)
	}
	// A small partition's next batch starts small.
	other := row
	other.AppID = "blog"
	b.add(&other, trackedMsg{seq: 5000}, 100, now)
	b.cutAll(flushMaxAge)
	b.add(&other, trackedMsg{seq: 5001}, 100, now)
	if bt := b.open[partitionKey{app: "blog", bucket: row.Timestamp.Unix()}]; cap(bt.rows) != newBatchSlots {
		t.Errorf("small partition's batch has capacity %d, want %d", cap(bt.rows), newBatchSlots)
	}
	for i := range 5000 {
		r := row
		r.Timestamp = r.Timestamp.Add(time.Duration(i) * time.Hour)
		b.add(&r, trackedMsg{seq: uint64(10000 + i)}, 100, now)
		b.cutAll(flushMaxAge)
	}
	if len(b.sizeHint) > 4096 {
		t.Errorf("%d size hints kept", len(b.sizeHint))
	}
}

// Once the consumer is caught up, the batches of past hours are cut, but
// only after no event arrived for the quiet period; the current hour's
// batch keeps waiting for more events.
func TestCutPastWritesPastHoursOnceQuiet(t *testing.T) {
	cfg := config.Default()
	b := testBatcher(cfg)
	now := time.Date(2026, 3, 14, 10, 30, 0, 0, time.UTC)
	past := Row{AppID: "shop", Timestamp: now.Add(-time.Hour)}
	current := Row{AppID: "shop", Timestamp: now}
	b.add(&past, trackedMsg{seq: 1}, 100, now)
	b.add(&current, trackedMsg{seq: 2}, 100, now)

	if n := b.cutPast(now.Add(500*time.Millisecond), time.Second); n != 0 {
		t.Fatalf("cut %d batches while events were still arriving", n)
	}
	if n := b.cutPast(now.Add(time.Second), time.Second); n != 1 {
		t.Fatalf("cut %d batches after a quiet second, want the past hour's 1", n)
	}
	if len(b.ready) != 1 || b.ready[0].key.bucket != now.Add(-time.Hour).Truncate(time.Hour).Unix() || b.ready[0].reason != flushCaughtUp {
		t.Fatalf("ready = %+v, want the past hour's batch cut as caught_up", b.ready)
	}
	if len(b.open) != 1 {
		t.Errorf("%d open batches, want the current hour's still open", len(b.open))
	}
}

// A past hour's batch that the stream has moved on from (a backlog in time
// order) is cut without waiting for BatchMaxAge; one still receiving its
// share of events is not, nor is the current hour's.
func TestIdleBatchOfAPastHourIsCut(t *testing.T) {
	cfg := config.Default()
	b := testBatcher(cfg)
	now := time.Date(2026, 3, 14, 10, 30, 0, 0, time.UTC)
	add := func(app string, ts time.Time) {
		b.add(&Row{AppID: app, Timestamp: ts}, trackedMsg{}, 100, now)
	}
	sevenOClock := now.Add(-3*time.Hour - 30*time.Minute)
	rounds := func(n int) {
		for range n {
			add("busy", sevenOClock)
			add("live", now)
		}
	}
	add("done", sevenOClock)
	rounds(25)
	b.tick(now)
	if len(b.ready) != 0 {
		t.Fatalf("cut %s after 50 events passed it, want none before 20 per open partition (60)", b.ready[0].key.app)
	}
	rounds(100)
	b.tick(now)
	if len(b.ready) != 0 {
		t.Fatalf("cut %s less than idleFor after its last event", b.ready[0].key.app)
	}
	b.tick(now.Add(idleFor))
	if len(b.ready) != 1 || b.ready[0].key.app != "done" || b.ready[0].reason != flushIdle {
		t.Fatalf("ready = %+v, want only the idle past batch, cut as idle", b.ready)
	}
}

// Late events trickling into a past hour after its backlog was written are
// not written a file per quiet moment: once a partition was cut early, its
// next batch waits for BatchMaxAge.
func TestTrickleIntoAPastHourWaitsForMaxAge(t *testing.T) {
	cfg := config.Default()
	cfg.AckWait = time.Hour // no lease is due: these events have no message
	b := testBatcher(cfg)
	now := time.Date(2026, 3, 14, 10, 30, 0, 0, time.UTC)
	late := Row{AppID: "shop", Timestamp: now.Add(-2 * time.Hour)}
	b.add(&late, trackedMsg{seq: 1}, 100, now)
	now = now.Add(time.Second)
	if n := b.cutPast(now, time.Second); n != 1 {
		t.Fatalf("cut %d batches at the end of the backlog, want 1", n)
	}
	for i := range 10 {
		b.add(&late, trackedMsg{seq: uint64(2 + i)}, 100, now)
		now = now.Add(time.Second)
		b.cutPast(now, time.Second)
		b.tick(now)
	}
	if len(b.ready) != 1 {
		t.Fatalf("%d batches cut, want the trickle still waiting in one", len(b.ready))
	}
	b.tick(now.Add(cfg.BatchMaxAge))
	if len(b.ready) != 2 || b.ready[1].reason != flushMaxAge || len(b.ready[1].rows) != 10 {
		t.Fatalf("ready = %d batches, want the trickle's 10 events cut on max_age", len(b.ready))
	}
}

// testBatcher is a batcher with cfg's limits and metrics of its own.
func testBatcher(cfg config.Config) *batcher {
	return newBatcher(cfg, nil, newMetrics(prometheus.NewRegistry(), nil, cfg.MaxBufferedBytes, false))
}

// A partition that only looked idle in the middle of a backlog (its fetcher
// stalled while another went on) is still written as soon as the backlog
// ends, not BatchMaxAge later.
func TestIdleCutDoesNotHoldBackTheEndOfABacklog(t *testing.T) {
	cfg := config.Default()
	cfg.AckWait = time.Hour // no lease is due: these events have no message
	b := testBatcher(cfg)
	now := time.Date(2026, 3, 14, 10, 30, 0, 0, time.UTC)
	past := now.Add(-2 * time.Hour)
	b.add(&Row{AppID: "blog", Timestamp: past}, trackedMsg{}, 100, now)
	for range 40 {
		b.add(&Row{AppID: "shop", Timestamp: past}, trackedMsg{}, 100, now)
	}
	now = now.Add(idleFor)
	b.tick(now)
	if len(b.ready) != 1 || b.ready[0].reason != flushIdle {
		t.Fatalf("ready = %d batches, want blog cut as idle", len(b.ready))
	}
	b.add(&Row{AppID: "blog", Timestamp: past}, trackedMsg{}, 100, now)
	if n := b.cutPast(now.Add(time.Second), time.Second); n != 2 {
		t.Fatalf("cut %d batches at the end of the backlog, want blog's and shop's", n)
	}
}
