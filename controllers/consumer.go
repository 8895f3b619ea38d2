package controllers

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// consumers talks to the sink's JetStream server: it makes the durable
// consumer match the spec, reads its counters and deletes it on request.
// Each call opens its own short connection with the sink's credentials, so
// sinks on different servers or accounts never share one.
type consumers struct{}

// withJetStream connects with cfg's URL and credentials and runs fn. A
// failure to connect is reported as a problem the user must fix.
func (consumers) withJetStream(ctx context.Context, cfg config.Config, fn func(jetstream.JetStream) error) error {
	opts, err := cfg.NATSOptions("jetsink-operator")
	if err != nil {
		return &problem{Reason: jetsinkv1.ReasonSecretKeyMissing, Message: "source.credentialsSecretRef: " + err.Error()}
	}
	opts = append(opts, nats.NoReconnect())
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return &problem{
			Reason:    jetsinkv1.ReasonNATSUnreachable,
			Message:   fmt.Sprintf("cannot connect to NATS at %s (source.url): %v", cfg.NATSURL, err),
			transient: true,
		}
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	return fn(js)
}

// ensure creates the consumer or updates it to want, and returns its info.
func (c consumers) ensure(ctx context.Context, cfg config.Config, want jetstream.ConsumerConfig) (*jetstream.ConsumerInfo, error) {
	var info *jetstream.ConsumerInfo
	err := c.withJetStream(ctx, cfg, func(js jetstream.JetStream) error {
		stream, err := js.Stream(ctx, cfg.Stream)
		if err != nil {
			return streamProblem(cfg, err)
		}
		cons, err := stream.CreateOrUpdateConsumer(ctx, want)
		if err != nil {
			return &problem{
				Reason:    jetsinkv1.ReasonConsumerFailed,
				Message:   fmt.Sprintf("cannot create or update consumer %q on stream %q: %v", want.Durable, cfg.Stream, err),
				transient: true,
			}
		}
		info = cons.CachedInfo()
		return nil
	})
	return info, err
}

// remove deletes the consumer; one that (or whose stream) is already gone
// counts as removed.
func (c consumers) remove(ctx context.Context, cfg config.Config) error {
	return c.withJetStream(ctx, cfg, func(js jetstream.JetStream) error {
		err := js.DeleteConsumer(ctx, cfg.Stream, cfg.Consumer)
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil
		}
		return err
	})
}

func streamProblem(cfg config.Config, err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return &problem{
			Reason:    jetsinkv1.ReasonStreamNotFound,
			Message:   fmt.Sprintf("stream %q (source.stream) does not exist on %s: create it, or fix the name", cfg.Stream, cfg.NATSURL),
			transient: true,
		}
	}
	return &problem{
		Reason:    jetsinkv1.ReasonNATSUnreachable,
		Message:   fmt.Sprintf("cannot look up stream %q on %s: %v", cfg.Stream, cfg.NATSURL, err),
		transient: true,
	}
}
