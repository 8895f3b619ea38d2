package sinkworker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers set on a dead-lettered message; the body and the original
// headers are kept as they were.
const (
	HeaderError       = "Jetsink-Error"        // reason, e.g. invalid_timestamp
	HeaderErrorDetail = "Jetsink-Error-Detail" // human-readable detail
	HeaderSubject     = "Jetsink-Subject"      // subject the event was published on
	HeaderStream      = "Jetsink-Stream"
	HeaderStreamSeq   = "Jetsink-Stream-Seq"
	HeaderDeliveries  = "Jetsink-Deliveries"
)

// deadLetterer takes events that can never be written out of the stream:
// published to the dead-letter subject and, once a JetStream stream has
// acknowledged the copy, Term'd. A dead letter is durable or it does not
// happen: when no stream acknowledges (none captures the subject, it is
// full, NATS is away) the event is NAKed with a delay and stays in the
// source stream, and the dead_letter_stream_missing gauge says why. Without
// a dead-letter subject, poison is Term'd and counted.
type deadLetterer struct {
	js      jetstream.JetStream
	subject string
	stream  string // the source stream's name, for the headers
	// incarnation names the source stream's incarnation in the message ID:
	// a stream re-created within the dead-letter stream's duplicate window
	// numbers its events from 1 again.
	incarnation string
	backoff     Backoff
	metrics     *metrics
	log         *slog.Logger

	mu       sync.Mutex
	lastWarn time.Time
}

// dlqTimeout bounds one dead-letter publish.
const dlqTimeout = 10 * time.Second

// detect reports at start whether a stream captures the dead-letter
// subject. It decides nothing: every publish asks JetStream again, so a
// stream created (or deleted) later is seen at the next poison event.
func (d *deadLetterer) detect(ctx context.Context) {
	if d.subject == "" {
		d.log.Warn("No dead-letter subject: poison events are Term'd and only counted")
		return
	}
	name, err := d.js.StreamNameBySubject(ctx, d.subject)
	if err != nil {
		d.metrics.deadLetterNoStream.Set(1)
		d.log.Error("No stream captures the dead-letter subject: poison events stay in the source stream (NAKed) until one does",
			"subject", d.subject, "error", err)
		return
	}
	d.log.Info("Dead-letter subject is captured by a stream", "subject", d.subject, "stream", name)
}

// handle dead-letters one message and Terms it. If no stream acknowledged
// the copy the message is NAKed with a delay instead, so it is never
// dropped unseen.
func (d *deadLetterer) handle(ctx context.Context, m trackedMsg, perr *poisonError) {
	reason := perr.reason
	if m.msg.Headers().Get(HeaderError) != "" {
		// The consumer reads its own dead-letter subject: this message is
		// already the stored copy, and publishing it again would loop.
		reason = reasonDeadLetterLoop
	} else if d.subject != "" {
		if err := d.publish(ctx, m, perr); err != nil {
			d.metrics.deadLetterErrors.Inc()
			d.warn("Could not dead-letter a poison event; NAKed, it stays in the source stream for a later retry",
				"reason", perr.reason, "stream_seq", m.seq, "deliveries", m.deliveries, "error", err)
			if m.msg.NakWithDelay(d.backoff.Delay(m.deliveries)) == nil {
				d.metrics.nacked.Inc()
			}
			return
		}
		d.metrics.deadLettered.Inc()
	}
	if err := m.msg.TermWithReason(reason); err != nil {
		// Redelivered later, and published again: the message ID makes
		// the dead-letter stream drop the copy.
		d.metrics.ackErrors.Inc()
		d.log.Warn("Could not Term a poison event; it will be redelivered", "stream_seq", m.seq, "error", err)
		return
	}
	d.metrics.terminated.WithLabelValues(reason).Inc()
	d.log.Debug("Terminated poison event", "reason", reason, "detail", perr.detail, "stream_seq", m.seq)
}

// warn logs a failure at most once every 10 s: an outage fails every
// poison event alike.
func (d *deadLetterer) warn(msg string, args ...any) {
	d.mu.Lock()
	now := time.Now()
	due := now.Sub(d.lastWarn) >= 10*time.Second
	if due {
		d.lastWarn = now
	}
	d.mu.Unlock()
	if due {
		d.log.Warn(msg, args...)
	}
}

// publish stores the dead-letter copy, and returns nil only once a stream
// has acknowledged it.
func (d *deadLetterer) publish(ctx context.Context, m trackedMsg, perr *poisonError) error {
	out := nats.NewMsg(d.subject)
	out.Data = m.msg.Data()
	for k, v := range m.msg.Headers() {
		out.Header[k] = v
	}
	out.Header.Set(HeaderError, perr.reason)
	if perr.detail != "" {
		out.Header.Set(HeaderErrorDetail, perr.detail)
	}
	out.Header.Set(HeaderSubject, m.msg.Subject())
	out.Header.Set(HeaderStream, d.stream)
	out.Header.Set(HeaderStreamSeq, strconv.FormatUint(m.seq, 10))
	out.Header.Set(HeaderDeliveries, strconv.FormatUint(m.deliveries, 10))
	// If the Term after a successful publish is lost, the event comes back
	// and is published again: the message ID lets the stream drop the copy.
	out.Header.Set(jetstream.MsgIDHeader, "jetsink-dlq-"+d.incarnation+"-"+strconv.FormatUint(m.seq, 10))

	ctx, cancel := context.WithTimeout(ctx, dlqTimeout)
	defer cancel()
	// No retries on "no responders": the event is NAKed and comes back
	// anyway, and the fetcher waiting here holds its prefetched messages
	// unleased (nats.go's default, 2 × 250 ms per poison event, made a
	// fault-matrix run redeliver good events behind a missing DLQ stream).
	_, err := d.js.PublishMsg(ctx, out, jetstream.WithRetryAttempts(0))
	switch {
	case err == nil:
		d.metrics.deadLetterNoStream.Set(0)
		return nil
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		d.metrics.deadLetterNoStream.Set(1)
		return fmt.Errorf("no stream captures the dead-letter subject %s: %w", d.subject, err)
	}
	return err
}
