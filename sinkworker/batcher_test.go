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
	b := newBatcher(cfg, newMetrics(prometheus.NewRegistry(), nil, cfg.MaxBufferedBytes, false))
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
	if bt := b.open[partitionKey{app: "blog", bucket: row.Timestamp.Unix()}]; cap(bt.rows) != 256 {
		t.Errorf("small partition's batch has capacity %d, want 256", cap(bt.rows))
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
