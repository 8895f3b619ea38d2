package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// Consumer metadata naming the sink that owns a consumer. The operator
// changes or deletes only consumers that carry its sink's namespace and
// name here; a sink deleted under Retain and created again (a new UID, the
// same name) resumes its own consumer.
const (
	metaNamespace = "jetsink.dev/namespace"
	metaName      = "jetsink.dev/name"
	metaUID       = "jetsink.dev/uid"
)

// natsConnectTimeout bounds a connect, so one tenant's dead server holds a
// reconcile worker for seconds, not the client's default.
const natsConnectTimeout = 2 * time.Second

// owner is the sink a consumer belongs to.
type owner struct {
	Namespace, Name string
	UID             types.UID
}

func ownerOf(sink *jetsinkv1.WarehouseSink) owner {
	return owner{Namespace: sink.Namespace, Name: sink.Name, UID: sink.UID}
}

func (o owner) String() string { return o.Namespace + "/" + o.Name }

func (o owner) metadata() map[string]string {
	return map[string]string{metaNamespace: o.Namespace, metaName: o.Name, metaUID: string(o.UID)}
}

// ownerIn reads the owner from a consumer's metadata; ok is false when it
// names none.
func ownerIn(md map[string]string) (o owner, ok bool) {
	o = owner{Namespace: md[metaNamespace], Name: md[metaName], UID: types.UID(md[metaUID])}
	return o, o.Namespace != "" && o.Name != ""
}

// consumers talks to the sink's JetStream server: it makes the durable
// consumer match the spec, reads its counters and deletes it on request.
// Calls share the pool's connections, one per server and credentials, so
// sinks on different servers or accounts never share one, and a server
// that just failed to answer is not dialled again by every reconcile.
type consumers struct {
	// pool holds the connections; nil is the package's defaultNATSPool,
	// which a zero reconciler and its lag refresher then share.
	pool *natsPool
}

// pooled is the pool the calls use.
func (c consumers) pooled() *natsPool {
	if c.pool == nil {
		return defaultNATSPool
	}
	return c.pool
}

// withJetStream runs fn on the pool's connection for cfg's URL and
// credentials. A failure to connect is a problem that may pass by itself;
// its message stays the same from one retry to the next (the Event and the
// conditions change only when the problem does), while the error logged
// says when the server is tried next.
func (c consumers) withJetStream(ctx context.Context, cfg config.Config, fn func(jetstream.JetStream) error) error {
	err := c.pooled().do(ctx, cfg, fn)
	var (
		cfgErr  *natsConfigError
		connErr *natsConnectError
	)
	switch {
	case errors.As(err, &cfgErr):
		return stalled(jetsinkv1.ReasonSecretKeyMissing, "source.credentialsSecretRef: %v", cfgErr.err)
	case errors.As(err, &connErr):
		ctrl.LoggerFrom(ctx).V(1).Info("NATS unreachable", "error", connErr.Error())
		return retrying(jetsinkv1.ReasonNATSUnreachable,
			"cannot connect to NATS at %s (source.url): %v (retried with backoff, at most a minute apart)",
			redactURL(cfg.NATSURL), connErr.err)
	}
	return err
}

// ensured is what ensure found and did.
type ensured struct {
	info *jetstream.ConsumerInfo
	// action is Created, Updated or Adopted, or empty when the consumer
	// already matched.
	action string
}

// ensure makes the sink's consumer exist and match want, as long as it is
// the sink's own: one created for it, or one whose metadata names it. A
// consumer made by anyone else is left as it is and reported, unless adopt
// says to take it over; ownerLives tells whether another sink that owns it
// still exists, and such a consumer is never taken.
func (c consumers) ensure(ctx context.Context, cfg config.Config, want jetstream.ConsumerConfig, o owner, adopt bool,
	ownerLives func(owner) bool) (ensured, error) {
	var out ensured
	want.Metadata = o.metadata()
	err := c.withJetStream(ctx, cfg, func(js jetstream.JetStream) error {
		stream, err := js.Stream(ctx, cfg.Stream)
		if err != nil {
			return streamProblem(cfg, err)
		}
		if p := deadLettersLoopBack(cfg, stream.CachedInfo().Config.Subjects); p != nil {
			return p
		}
		cons, err := stream.Consumer(ctx, want.Durable)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			cons, err = stream.CreateConsumer(ctx, want)
			if err != nil {
				return consumerProblem(cfg, want, "create", err)
			}
			out = ensured{info: cons.CachedInfo(), action: "Created"}
			return nil
		}
		if err != nil {
			return consumerProblem(cfg, want, "read", err)
		}
		have := cons.CachedInfo()
		action := "Updated"
		if theirs, named := ownerIn(have.Config.Metadata); !named || theirs.Namespace != o.Namespace || theirs.Name != o.Name {
			if p := foreignConsumer(cfg, want.Durable, theirs, named, adopt, ownerLives); p != nil {
				return p
			}
			action = "Adopted"
		}
		if !consumerDiffers(have.Config, want) {
			out = ensured{info: have}
			return nil
		}
		cons, err = stream.UpdateConsumer(ctx, want)
		if err != nil {
			return consumerProblem(cfg, want, "update", err)
		}
		out = ensured{info: cons.CachedInfo(), action: action}
		return nil
	})
	return out, err
}

// foreignConsumer is the problem of a consumer the sink does not own, or nil
// when the sink may adopt it.
func foreignConsumer(cfg config.Config, name string, theirs owner, named, adopt bool, ownerLives func(owner) bool) *problem {
	switch {
	case named && ownerLives(theirs):
		return stalled(jetsinkv1.ReasonConsumerOwnedElsewhere,
			"consumer %q on stream %q belongs to sink %s: two sinks cannot share a consumer; give this one another source.consumer",
			name, cfg.Stream, theirs)
	case adopt:
		return nil
	case named:
		return stalled(jetsinkv1.ReasonConsumerOwnedElsewhere,
			"consumer %q on stream %q was made for sink %s, which no longer exists: annotate this sink %s=true to take it over and resume from its position, or give it another source.consumer",
			name, cfg.Stream, theirs, jetsinkv1.AnnotationAdoptConsumer)
	default:
		return stalled(jetsinkv1.ReasonConsumerOwnedElsewhere,
			"consumer %q on stream %q was not made by jetsink and is left untouched: give this sink another source.consumer, or annotate it %s=true to take the consumer over (its configuration is then rewritten to match the sink)",
			name, cfg.Stream, jetsinkv1.AnnotationAdoptConsumer)
	}
}

// consumerDiffers reports whether have lacks something of want: the fields
// the operator sets, and its owner metadata (the server adds its own keys,
// which are not compared).
func consumerDiffers(have, want jetstream.ConsumerConfig) bool {
	filters := func(c jetstream.ConsumerConfig) []string {
		if c.FilterSubject != "" {
			return []string{c.FilterSubject}
		}
		return c.FilterSubjects
	}
	for k, v := range want.Metadata {
		if have.Metadata[k] != v {
			return true
		}
	}
	return have.AckPolicy != want.AckPolicy || have.AckWait != want.AckWait || have.MaxDeliver != want.MaxDeliver ||
		have.MaxAckPending != want.MaxAckPending || have.Description != want.Description ||
		!slices.Equal(filters(have), filters(want))
}

// errNotOurs says remove found a consumer it must not delete.
var errNotOurs = errors.New("the consumer is not this sink's")

// remove deletes the sink's consumer. One that (or whose stream) is already
// gone counts as removed; one that is not the sink's is left, errNotOurs.
func (c consumers) remove(ctx context.Context, cfg config.Config, o owner) error {
	return c.withJetStream(ctx, cfg, func(js jetstream.JetStream) error {
		cons, err := js.Consumer(ctx, cfg.Stream, cfg.Consumer)
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if theirs, named := ownerIn(cons.CachedInfo().Config.Metadata); !named || theirs.Namespace != o.Namespace || theirs.Name != o.Name {
			return errNotOurs
		}
		err = js.DeleteConsumer(ctx, cfg.Stream, cfg.Consumer)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil
		}
		return err
	})
}

func streamProblem(cfg config.Config, err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return stalled(jetsinkv1.ReasonStreamNotFound,
			"stream %q (source.stream) does not exist on %s: create it, or fix the name", cfg.Stream, redactURL(cfg.NATSURL))
	}
	return retrying(jetsinkv1.ReasonNATSUnreachable, "cannot look up stream %q on %s: %v", cfg.Stream, redactURL(cfg.NATSURL), err)
}

// consumerProblem turns a failed consumer call into a problem: filters the
// server refuses are the spec's fault, anything else may pass.
func consumerProblem(cfg config.Config, want jetstream.ConsumerConfig, verb string, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeOverlappingFilterSubjects {
		return stalled(jetsinkv1.ReasonInvalidSpec, "source.filterSubjects overlap, which NATS refuses: %v", err)
	}
	if errors.As(err, &apiErr) && apiErr.Code == 400 {
		return stalled(jetsinkv1.ReasonInvalidSpec, "NATS refused consumer %q on stream %q: %v", want.Durable, cfg.Stream, err)
	}
	return retrying(jetsinkv1.ReasonConsumerFailed, "cannot %s consumer %q on stream %q: %v", verb, want.Durable, cfg.Stream, err)
}

// deadLettersLoopBack refuses a dead-letter subject the sink would read
// back as events: one its filters take, or, without filters, one the
// stream itself captures. The schema refuses the first case already; the
// second needs the stream's subjects.
func deadLettersLoopBack(cfg config.Config, streamSubjects []string) *problem {
	dlq := cfg.DeadLetterSubject
	if dlq == "" {
		return nil
	}
	read := cfg.FilterSubjects
	where := "source.filterSubjects"
	if len(read) == 0 {
		read, where = streamSubjects, fmt.Sprintf("stream %q's subjects (no source.filterSubjects narrow them)", cfg.Stream)
	}
	for _, s := range read {
		if subjectsCollide(s, dlq) {
			return stalled(jetsinkv1.ReasonInvalidSpec,
				"source.deadLetterSubject %q is read by the sink itself (%s include %q): dead letters would come back as events; send them to a subject outside them",
				dlq, where, s)
		}
	}
	return nil
}

// subjectsCollide reports whether some subject matches both patterns, with
// NATS wildcards: * is one token, > one or more trailing tokens.
func subjectsCollide(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		if at[i] == ">" || bt[i] == ">" {
			return true
		}
		if at[i] != bt[i] && at[i] != "*" && bt[i] != "*" {
			return false
		}
	}
	return len(at) == len(bt)
}

// redactURL drops any user information from a (comma-separated list of)
// server URL(s), so a password never reaches a condition, an Event or a
// log. The schema refuses such URLs; this guards sinks stored before it did.
func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		switch {
		case err != nil:
			if strings.Contains(p, "@") {
				parts[i] = "<unparsable URL>"
			}
		case u.User != nil:
			u.User = nil
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}
