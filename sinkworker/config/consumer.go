package config

import (
	"math"

	"github.com/nats-io/nats.go/jetstream"
)

// minEventBytes is the smallest event size the default MaxAckPending is
// sized for.
const minEventBytes = 128

// AckPendingPerProcess is how many unacknowledged events one worker process
// may hold: MaxAckPending when set, else everything its buffered-bytes cap
// allows plus one fetch per worker goroutine. Sized so that the worker's own
// cap, not the server, bounds its batches; a lower limit makes partitions
// stall half-full and flush small files.
func (c Config) AckPendingPerProcess() int {
	if c.MaxAckPending > 0 {
		return c.MaxAckPending
	}
	n := c.MaxBufferedBytes/minEventBytes + int64(c.Workers*c.FetchBatchSize)
	return int(min(n, math.MaxInt32))
}

// ConsumerConfig is the durable pull consumer a sink reads from. The operator
// creates or updates it to match; a worker run outside Kubernetes creates it
// when it is absent. Both call this one function so they agree on it.
//
// Its MaxDeliver is unlimited: JetStream drops a message silently once it
// has been delivered MaxDeliver times, and deliveries are also spent by
// things that are not the event's fault (a pod killed before its ACK, a
// lease lost while NATS was away). The worker bounds deliveries itself
// instead (Config.MaxDeliver): an event delivered more often than that
// without being written is dead-lettered, durably, never dropped.
func (c Config) ConsumerConfig() jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:       c.Consumer,
		Description:   "jetsink: events to s3://" + c.Bucket + "/" + c.Prefix,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: c.AckPendingPerProcess(),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	switch len(c.FilterSubjects) {
	case 0:
	case 1:
		cc.FilterSubject = c.FilterSubjects[0]
	default:
		cc.FilterSubjects = c.FilterSubjects
	}
	return cc
}
