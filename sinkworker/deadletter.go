package sinkworker

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
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
// published to the dead-letter subject (acknowledged by JetStream when a
// stream captures it), and only then Term'd. Without a dead-letter subject
// they are Term'd and counted.
type deadLetterer struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	subject  string
	inStream bool // a stream captures subject: publish waits for its ack
	stream   string
	backoff  Backoff
	metrics  *metrics
	log      *slog.Logger
}

// dlqTimeout bounds one dead-letter publish.
const dlqTimeout = 10 * time.Second

// detect finds whether a stream captures the dead-letter subject, once at
// start: a JetStream publish with no stream behind it would only time out.
func (d *deadLetterer) detect(ctx context.Context) {
	if d.subject == "" {
		d.log.Warn("No dead-letter subject: poison events are Term'd and only counted")
		return
	}
	name, err := d.js.StreamNameBySubject(ctx, d.subject)
	if err != nil {
		d.log.Warn("No stream captures the dead-letter subject; poison events are published with core NATS (no delivery guarantee)",
			"subject", d.subject, "error", err)
		return
	}
	d.inStream = true
	d.log.Info("Dead-letter subject is captured by a stream", "subject", d.subject, "stream", name)
}

// handle dead-letters one message and Terms it. If the publish fails the
// message is NAKed with a delay instead, so it is never dropped unseen.
func (d *deadLetterer) handle(ctx context.Context, m trackedMsg, perr *poisonError) {
	reason := perr.reason
	if m.msg.Headers().Get(HeaderError) != "" {
		// The consumer reads its own dead-letter subject: publishing again
		// would loop forever.
		reason = reasonDeadLetterLoop
	} else if d.subject != "" {
		if err := d.publish(ctx, m, perr); err != nil {
			d.log.Error("Could not dead-letter a poison event; NAKed for a later retry",
				"reason", perr.reason, "stream_seq", m.seq, "error", err)
			if m.msg.NakWithDelay(d.backoff.Delay(m.deliveries)) == nil {
				d.metrics.nacked.Inc()
			}
			return
		}
		d.metrics.deadLettered.Inc()
	}
	if err := m.msg.TermWithReason(reason); err != nil {
		d.metrics.ackErrors.Inc()
		d.log.Warn("Could not Term a poison event; it will be redelivered", "stream_seq", m.seq, "error", err)
		return
	}
	d.metrics.terminated.WithLabelValues(reason).Inc()
	d.log.Debug("Terminated poison event", "reason", reason, "detail", perr.detail, "stream_seq", m.seq)
}

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
	// and is published again: the message id lets the stream drop the copy.
	out.Header.Set(jetstream.MsgIDHeader, "jetsink-dlq-"+d.stream+"-"+strconv.FormatUint(m.seq, 10))

	ctx, cancel := context.WithTimeout(ctx, dlqTimeout)
	defer cancel()
	if d.inStream {
		_, err := d.js.PublishMsg(ctx, out)
		if !errors.Is(err, jetstream.ErrNoStreamResponse) {
			return err
		}
		d.log.Warn("Dead-letter stream stopped answering; falling back to core NATS", "subject", d.subject)
	}
	if err := d.nc.PublishMsg(out); err != nil {
		return err
	}
	return d.nc.FlushWithContext(ctx)
}
