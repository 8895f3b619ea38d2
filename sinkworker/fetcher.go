package sinkworker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// fetcher pulls from the consumer and decodes in the same goroutine, so
// decoding scales with Config.Workers and a decoded event goes straight to
// the batcher. It only waits on the batcher's memory budget, never on an
// upload.
//
// A message the fetcher holds is always leased: either it is in a batch
// (batcher.tick renews its lease), or it is being handled now. The pull
// iterator prefetches up to FetchBatchSize messages, which nothing can
// lease while they wait in its buffer; so when the budget keeps a fetcher
// waiting for pauseAfter, it pauses: it takes every prefetched message
// into its batches (over the budget, by at most one pull), pulls nothing
// more until the budget has room again, then opens a new iterator.
type fetcher struct {
	cons       jetstream.Consumer
	pull       []jetstream.PullMessagesOpt
	pauseAfter time.Duration
	dec        decoder
	row        Row
	batcher    *batcher
	dead       *deadLetterer
	metrics    *metrics
	w          *Worker

	mu       sync.Mutex
	it       jetstream.MessagesContext
	draining bool
}

// run pulls until drained. If the consumer is lost it reports that to the
// worker and returns.
func (f *fetcher) run(ctx context.Context) {
	f.w.fetchersLive.Add(1)
	f.metrics.fetchersLive.Inc()
	defer func() {
		f.w.fetchersLive.Add(-1)
		f.metrics.fetchersLive.Dec()
	}()
	for {
		it, err := f.open()
		if it == nil {
			if err != nil {
				f.w.lose(err)
			}
			return
		}
		if err := f.consume(ctx, it); err != nil {
			f.w.lose(err)
			return
		}
	}
}

// open starts a pull iterator, retrying while NATS is away. It returns nil
// when the fetcher is drained, with an error when the consumer is gone.
func (f *fetcher) open() (jetstream.MessagesContext, error) {
	for attempt := 0; ; attempt++ {
		f.mu.Lock()
		if f.draining {
			f.mu.Unlock()
			return nil, nil
		}
		it, err := f.cons.Messages(f.pull...)
		if err == nil {
			f.it = it
			f.mu.Unlock()
			return it, nil
		}
		f.mu.Unlock()
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, err
		}
		f.metrics.fetchErrors.Inc()
		if attempt%40 == 0 {
			f.w.log.Warn("Cannot pull from the consumer; retrying", "error", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// drain stops pulling: the messages already delivered are still handled.
func (f *fetcher) drain() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.draining = true
	if f.it != nil {
		f.it.Drain()
	}
}

// consume handles it's messages until it is closed: by drain, by a pause
// (then it returns nil once the budget has room), or by the server because
// the consumer was deleted (then it returns why).
func (f *fetcher) consume(ctx context.Context, it jetstream.MessagesContext) error {
	var lastWarn time.Time
	failures := 0
	patience := f.pauseAfter
	for {
		msg, err := it.Next()
		switch {
		case err == nil:
			if !f.handle(ctx, msg, patience) {
				// Waited pauseAfter for the budget: take in what the
				// iterator prefetched, so that it is leased, and pull no
				// more for now.
				it.Drain()
				patience = -1
				f.handle(ctx, msg, patience)
			}
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			f.mu.Lock()
			draining := f.draining
			f.mu.Unlock()
			switch {
			case draining:
				return nil
			case patience < 0:
				f.batcher.waitRoom()
				return nil
			}
			// Nothing here closed it: the server ended it.
			return fmt.Errorf("the pull iterator was closed by the server: %w", err)
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
			return err
		default:
			// Missed heartbeats, a reconnect: the iterator recovers on its
			// own; do not spin meanwhile, and log an outage once every 10s
			// rather than 4 times a second.
			failures++
			f.metrics.fetchErrors.Inc()
			if time.Since(lastWarn) >= 10*time.Second {
				f.w.log.Warn("Fetching from the consumer failed; retrying", "error", err, "failures", failures)
				lastWarn = time.Now()
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}

// handle decodes and buffers one message. It returns false, keeping
// nothing, when the budget had no room within patience (see addWithin).
func (f *fetcher) handle(ctx context.Context, msg jetstream.Msg, patience time.Duration) bool {
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery (cannot come from a pull consumer); it
		// has no sequence to write or redeliver by.
		f.metrics.received.Inc()
		f.w.log.Error("Received a message without JetStream metadata; terminating it", "subject", msg.Subject(), "error", err)
		_ = msg.Term()
		return true
	}
	tm := trackedMsg{msg: msg, seq: meta.Sequence.Stream, deliveries: meta.NumDelivered}
	if err := f.dec.decodeDelivery(msg.Data(), msg.Subject(), tm.seq, meta.Timestamp, &f.row); err != nil {
		f.count(tm)
		f.dead.handle(ctx, tm, err.(*poisonError))
		return true
	}
	size := eventSize(msg.Data())
	if st := f.dec.declared; st != nil {
		size += int64(st.allocated)
	}
	added, full := f.batcher.addWithin(&f.row, f.dec.values(), tm, size, time.Now(), patience)
	if full {
		return false
	}
	f.count(tm)
	if !added {
		// Shutting down past the point of writing more: hand it back now
		// rather than let it wait out AckWait.
		if msg.Nak() == nil {
			f.metrics.nacked.Inc()
			f.w.shutdownNacked.Add(1)
		}
	}
	return true
}

// count counts a delivery once it is handled.
func (f *fetcher) count(tm trackedMsg) {
	f.metrics.received.Inc()
	if tm.deliveries > 1 {
		f.metrics.redelivered.Inc()
	}
}
