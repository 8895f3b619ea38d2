package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// event is one message the harness publishes: a good analytics event or a
// poison one, known by its event_id either way.
type event struct {
	id     string
	app    string
	poison bool
	body   []byte
}

// goodEvent is a valid envelope; pad adds that many bytes of properties.
func goodEvent(id, app string, ts time.Time, pad int) event {
	props := ""
	if pad > 0 {
		props = fmt.Sprintf(`,"properties":{"pad":%q}`, strings.Repeat("x", pad))
	}
	body := fmt.Sprintf(`{"event_id":%q,"app_id":%q,"event":"click","timestamp":%q,"user_id":"u-%s"%s}`,
		id, app, ts.UTC().Format(time.RFC3339Nano), id, props)
	return event{id: id, app: app, body: []byte(body)}
}

// poisonEvent has an event_id but no valid timestamp: the worker must
// dead-letter it (publish to the DLQ, then Term), never write or drop it.
func poisonEvent(id string) event {
	body := fmt.Sprintf(`{"event_id":%q,"app_id":"shop","event":"x","timestamp":"soon"}`, id)
	return event{id: id, app: "shop", poison: true, body: []byte(body)}
}

// publisher publishes events to the stream and remembers, by event id,
// every event JetStream acknowledged: the set the verdict is taken
// against. Each message carries its event id as Nats-Msg-Id, so a publish
// retried after a lost acknowledgement is not stored twice; every publish
// is retried until acknowledged (or the case's context ends), across NATS
// restarts.
type publisher struct {
	js      jetstream.JetStream
	subject string // events.<app>

	mu     sync.Mutex
	good   []string
	poison []string
	seen   map[string]bool
	failed int // publishes that had to be retried
}

func newPublisher(js jetstream.JetStream) *publisher {
	return &publisher{js: js, seen: map[string]bool{}}
}

// publish sends evs and returns once every one is acknowledged.
func (p *publisher) publish(ctx context.Context, evs []event) error {
	const chunk = 500
	for len(evs) > 0 {
		n := min(chunk, len(evs))
		if err := p.publishChunk(ctx, evs[:n]); err != nil {
			return err
		}
		evs = evs[n:]
	}
	return nil
}

func (p *publisher) publishChunk(ctx context.Context, evs []event) error {
	pending := evs
	for len(pending) > 0 {
		type inflight struct {
			ev  event
			fut jetstream.PubAckFuture
		}
		var retry []event
		var futs []inflight
		for _, ev := range pending {
			msg := nats.NewMsg("events." + ev.app)
			msg.Data = ev.body
			fut, err := p.js.PublishMsgAsync(msg, jetstream.WithMsgID(ev.id))
			if err != nil {
				retry = append(retry, ev)
				continue
			}
			futs = append(futs, inflight{ev, fut})
		}
		for _, f := range futs {
			select {
			case <-f.fut.Ok():
				p.record(f.ev)
			case <-f.fut.Err():
				retry = append(retry, f.ev)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if len(retry) > 0 {
			p.mu.Lock()
			p.failed += len(retry)
			p.mu.Unlock()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
		pending = retry
	}
	return nil
}

func (p *publisher) record(ev event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen[ev.id] {
		return
	}
	p.seen[ev.id] = true
	if ev.poison {
		p.poison = append(p.poison, ev.id)
	} else {
		p.good = append(p.good, ev.id)
	}
}

// flow publishes n events made by mk, evenly over d (in ticks of 100 ms),
// the live traffic a fault happens under. It returns when all are
// acknowledged.
func (p *publisher) flow(ctx context.Context, n int, d time.Duration, mk func(i int) event) error {
	ticks := max(int(d/(100*time.Millisecond)), 1)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	next := 0
	for k := 1; next < n; k++ {
		upto := min(n, n*k/ticks)
		if k >= ticks {
			upto = n
		}
		evs := make([]event, 0, upto-next)
		for ; next < upto; next++ {
			evs = append(evs, mk(next))
		}
		if err := p.publish(ctx, evs); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// counts returns how many good and poison events were acknowledged.
func (p *publisher) counts() (good, poison int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.good), len(p.poison)
}

func (p *publisher) retried() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

func (p *publisher) ids() (good, poison []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.good...), append([]string(nil), p.poison...)
}
