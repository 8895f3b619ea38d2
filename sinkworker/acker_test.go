package sinkworker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsink/jetsink/internal/testutil/natstest"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Base: time.Second, Max: 10 * time.Second}
	for deliveries, want := range map[uint64]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 1000: 10 * time.Second} {
		if got := b.Delay(deliveries); got != want {
			t.Errorf("Delay(%d) = %s, want %s", deliveries, got, want)
		}
	}
}

// BenchmarkAck measures what confirming ACKs costs per event: the acker's
// Ack + one flush per batch, against DoubleAck (a server reply per ACK),
// sequential and with 64 in flight. On the 2-core dev machine:
// go test -run XXX -bench Ack ./sinkworker/
func BenchmarkAck(b *testing.B) {
	for _, mode := range []string{"ack+flush", "doubleack", "doubleack-64"} {
		b.Run(mode, func(b *testing.B) {
			s := natstest.Start(b)
			nc, js := s.JetStream(b)
			s.CreateStream(b, "B", "b.>")
			for range b.N {
				if _, err := js.PublishAsync("b.x", []byte("x")); err != nil {
					b.Fatal(err)
				}
			}
			<-js.PublishAsyncComplete()
			ctx := context.Background()
			c, err := js.CreateConsumer(ctx, "B", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: -1})
			if err != nil {
				b.Fatal(err)
			}
			msgs := make([]jetstream.Msg, 0, b.N)
			for len(msgs) < b.N {
				batch, err := c.Fetch(b.N-len(msgs), jetstream.FetchMaxWait(5*time.Second))
				if err != nil {
					b.Fatal(err)
				}
				for m := range batch.Messages() {
					msgs = append(msgs, m)
				}
			}
			b.ResetTimer()
			switch mode {
			case "ack+flush":
				for _, m := range msgs {
					_ = m.Ack()
				}
				if err := nc.Flush(); err != nil {
					b.Fatal(err)
				}
			case "doubleack":
				for _, m := range msgs {
					if err := m.DoubleAck(ctx); err != nil {
						b.Fatal(err)
					}
				}
			case "doubleack-64":
				var wg sync.WaitGroup
				ch := make(chan jetstream.Msg)
				for range 64 {
					wg.Go(func() {
						for m := range ch {
							_ = m.DoubleAck(ctx)
						}
					})
				}
				for _, m := range msgs {
					ch <- m
				}
				close(ch)
				wg.Wait()
			}
			b.StopTimer()
			time.Sleep(100 * time.Millisecond) // let the server apply the ACKs
			info, err := c.Info(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if info.NumAckPending != 0 {
				b.Fatalf("%d not acknowledged", info.NumAckPending)
			}
		})
	}
}

// Only the consumer's own limit, or the worker's on a batch that failed by
// itself, stops a NAK: a shutdown never dead-letters an event because of
// deliveries that restarts and lost leases spent.
func TestLastDelivery(t *testing.T) {
	for _, tc := range []struct {
		name                string
		maxDeliver, consMax int
		deliveries          uint64
		shutdown, want      bool
	}{
		{"unlimited consumer, shutdown, many deliveries", 3, -1, 50, true, false},
		{"unlimited consumer, encode failure below the bound", 3, -1, 2, false, false},
		{"unlimited consumer, encode failure at the bound", 3, -1, 3, false, true},
		{"limited consumer, its last delivery, shutdown", 10, 4, 4, true, true},
		{"limited consumer, before its last delivery", 10, 4, 3, true, false},
	} {
		a := &acker{maxDeliver: tc.maxDeliver, consumerMaxDeliver: tc.consMax}
		if got := a.lastDelivery(trackedMsg{deliveries: tc.deliveries}, tc.shutdown); got != tc.want {
			t.Errorf("%s: lastDelivery = %v, want %v", tc.name, got, tc.want)
		}
	}
}
