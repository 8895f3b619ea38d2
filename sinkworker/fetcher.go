package sinkworker

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// fetcher pulls from the consumer and decodes in the same goroutine, so
// decoding scales with Config.Workers and a decoded event goes straight to
// the batcher. It only waits on the batcher's memory budget, never on an
// upload.
type fetcher struct {
	it      jetstream.MessagesContext
	dec     decoder
	row     Row
	batcher *batcher
	dead    *deadLetterer
	metrics *metrics
	w       *Worker
}

// run processes messages until the iterator is drained and closed.
func (f *fetcher) run(ctx context.Context) {
	var lastWarn time.Time
	failures := 0
	for {
		msg, err := f.it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			// Missed heartbeats, a consumer being recreated, a reconnect:
			// the iterator recovers on its own; do not spin meanwhile, and
			// log an outage once every 10s rather than 4 times a second.
			failures++
			if time.Since(lastWarn) >= 10*time.Second {
				f.w.log.Warn("Fetching from the consumer failed; retrying", "error", err, "failures", failures)
				lastWarn = time.Now()
			}
			time.Sleep(250 * time.Millisecond)
			continue
		}
		f.handle(ctx, msg)
	}
}

func (f *fetcher) handle(ctx context.Context, msg jetstream.Msg) {
	f.metrics.received.Inc()
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery (cannot come from a pull consumer); it
		// has no sequence to write or redeliver by.
		f.w.log.Error("Received a message without JetStream metadata; terminating it", "subject", msg.Subject(), "error", err)
		_ = msg.Term()
		return
	}
	tm := trackedMsg{msg: msg, seq: meta.Sequence.Stream, deliveries: meta.NumDelivered}
	if err := f.dec.decode(msg.Data(), &f.row); err != nil {
		f.dead.handle(ctx, tm, err.(*poisonError))
		return
	}
	f.row.Subject = msg.Subject()
	f.row.StreamSeq = int64(tm.seq)
	f.row.ReceivedAt = meta.Timestamp
	if !f.batcher.add(&f.row, tm, eventSize(msg.Data()), time.Now()) {
		// Shutting down past the point of writing more: hand it back now
		// rather than let it wait out AckWait.
		if msg.Nak() == nil {
			f.metrics.nacked.Inc()
			f.w.shutdownNacked.Add(1)
		}
	}
}
