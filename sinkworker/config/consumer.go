package config

import (
	"github.com/nats-io/nats.go/jetstream"
)

// ConsumerConfig is the durable pull consumer a sink reads from. The operator
// creates or updates it to match; a worker run outside Kubernetes creates it
// when it is absent. Both call this one function so they agree on it.
func (c Config) ConsumerConfig() jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:       c.Consumer,
		Description:   "jetsink: events to s3://" + c.Bucket + "/" + c.Prefix,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
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
