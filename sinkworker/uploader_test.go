package sinkworker

import (
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetsink/jetsink/internal/testutil/s3test"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// A key is never overwritten, and a 412 counts as "already written" only
// when the key holds exactly this file: the same file again is success
// without a second write; a different file under the same key (another
// batch with the same first and last sequence, or another writer's object)
// goes to a key of its own instead of being dropped or clobbering it.
func TestUploadNeverClobbers(t *testing.T) {
	s := s3test.Start(t)
	s.CreateBucket(t, "lake")
	s.SetEnv(t)
	cfg := config.Default()
	cfg.Bucket, cfg.Endpoint, cfg.ForcePathStyle = "lake", s.URL, true
	reg := prometheus.NewRegistry()
	var b *batcher
	m := newMetrics(reg, func() *batcher { return b }, 0, false)
	b = newBatcher(cfg, nil, m)
	up, err := newUploader(t.Context(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	const key = "events/app_id=a/date=2026-01-01/hour=00/S.1-c-1-9.parquet"
	put := func(body string) (string, error) {
		return up.put(t.Context(), key, []byte(body), contentHash([]byte(body)))
	}

	if got, err := put("first"); err != nil || got != key {
		t.Fatalf("first put: %s, %v", got, err)
	}
	if got, err := put("first"); err != nil || got != key {
		t.Errorf("same file again: %s, %v; want success at the same key", got, err)
	}
	if got := metric(t, reg, "jetsink_already_written_total", "outcome", writtenIdentical); got != 1 {
		t.Errorf("already_written{identical} = %v, want 1", got)
	}
	alt, err := put("other")
	if err != nil || alt == key || !strings.HasPrefix(alt, strings.TrimSuffix(key, ".parquet")+"-") {
		t.Fatalf("different file, same key: %s, %v; want an alternate key", alt, err)
	}
	if again, err := put("other"); err != nil || again != alt {
		t.Errorf("different file again: %s, %v; want success at %s", again, err, alt)
	}
	if got := string(s.Get(t, "lake", key)); got != "first" {
		t.Errorf("original object now holds %q: it was overwritten", got)
	}
	if got := string(s.Get(t, "lake", alt)); got != "other" {
		t.Errorf("alternate object holds %q", got)
	}
	// An object someone else wrote, without our metadata, is not taken for
	// this file either.
	const foreign = "events/app_id=a/date=2026-01-01/hour=00/S.1-c-10-20.parquet"
	if _, err := s.Client().PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String("lake"), Key: aws.String(foreign),
		Body: strings.NewReader("theirs")}); err != nil {
		t.Fatal(err)
	}
	if got, err := up.put(t.Context(), foreign, []byte("theirs"), contentHash([]byte("theirs"))); err != nil || got == foreign {
		t.Errorf("a foreign object with the same bytes but no hash: %s, %v; want an alternate key", got, err)
	}
	if n := len(s.List(t, "lake", "")); n != 4 {
		t.Errorf("%d objects, want 4", n)
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
