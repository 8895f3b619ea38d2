package sinkworker

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetsink/jetsink/internal/testutil/s3test"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// A key is never overwritten: the same batch again is success without a
// second write; a different batch that happens to share the first and last
// sequence goes to its own key instead of being dropped.
func TestUploadNeverClobbers(t *testing.T) {
	s := s3test.Start(t)
	s.CreateBucket(t, "lake")
	s.SetEnv(t)
	cfg := config.Default()
	cfg.Bucket, cfg.Endpoint, cfg.ForcePathStyle = "lake", s.URL, true
	m := newMetrics(prometheus.NewRegistry(), func() *batcher { return nil }, 0, false)
	up, err := newUploader(t.Context(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	const key = "events/app_id=a/date=2026-01-01/hour=00/S-c-1-9.parquet"
	mine := []trackedMsg{{seq: 1}, {seq: 5}, {seq: 9}}
	other := []trackedMsg{{seq: 1}, {seq: 9}}

	if got, err := up.put(t.Context(), key, []byte("first"), batchID(mine)); err != nil || got != key {
		t.Fatalf("first put: %s, %v", got, err)
	}
	if got, err := up.put(t.Context(), key, []byte("first"), batchID(mine)); err != nil || got != key {
		t.Errorf("same batch again: %s, %v; want success at the same key", got, err)
	}
	alt, err := up.put(t.Context(), key, []byte("other"), batchID(other))
	if err != nil || alt == key || !strings.HasPrefix(alt, strings.TrimSuffix(key, ".parquet")+"-") {
		t.Fatalf("different batch, same key: %s, %v; want an alternate key", alt, err)
	}
	if got := string(s.Get(t, "lake", key)); got != "first" {
		t.Errorf("original object now holds %q: it was overwritten", got)
	}
	if got := string(s.Get(t, "lake", alt)); got != "other" {
		t.Errorf("alternate object holds %q", got)
	}
	if n := len(s.List(t, "lake", "")); n != 2 {
		t.Errorf("%d objects, want 2", n)
	}
}

// An upload that reached S3 but whose answer was lost is retried; the
// retry finds the file (412) and counts as written: one file, no duplicate.
func TestLostUploadAnswerIsNotWrittenTwice(t *testing.T) {
	e := newEnv(t)
	e.proxy.Set("", s3test.Fault{DropResponse: true, Times: 3})
	evs := makeEvents(300, []string{"shop"}, 1)
	e.publish(evs)
	w := e.start(Backoff{Base: 100 * time.Millisecond, Max: 100 * time.Millisecond})
	eventually(t, 20*time.Second, "events ACKed", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	w.stop(t)
	if e.proxy.Faults() == 0 {
		t.Fatal("no answer was dropped")
	}
	e.checkWritten(evs)
}
