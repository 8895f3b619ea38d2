package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
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
// changes only consumers that carry its sink's namespace and name here; a
// sink deleted under Retain and created again (a new UID, the same name)
// resumes its own consumer and stamps its UID on it. It deletes only a
// consumer whose UID is the sink's too, so a sink of the same name in
// another cluster on the same server never loses its consumer.
const (
	metaNamespace = "jetsink.dev/namespace"
	metaName      = "jetsink.dev/name"
	metaUID       = "jetsink.dev/uid"
)

// natsConnectTimeout bounds a connect, so one tenant's dead server holds a
// reconcile worker for seconds, not the client's default.
const natsConnectTimeout = 2 * time.Second

// natsCallTimeout bounds all of one reconcile's JetStream requests (stream
// info, consumer info, create or update): a server that takes connections
// but does not answer them (JetStream off, overloaded) holds a reconcile
// worker for this long at most, not 5 s per request.
const natsCallTimeout = 4 * time.Second

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
	ctx, cancel := context.WithTimeout(ctx, natsCallTimeout)
	defer cancel()
	err := c.pooled().do(ctx, cfg, func(js jetstream.JetStream) error {
		err := fn(js)
		if err != nil && ctx.Err() != nil && !isProblem(err) {
			return retrying(jetsinkv1.ReasonNATSUnreachable, "NATS at %s (source.url) did not answer within %s: %v",
				redactURL(cfg.NATSURL), natsCallTimeout, err)
		}
		return err
	})
	var (
		cfgErr  *natsConfigError
		connErr *natsConnectError
	)
	switch {
	case errors.As(err, &cfgErr):
		return stalled(jetsinkv1.ReasonSecretKeyMissing, "source.credentialsSecretRef: %v", cfgErr.err)
	case errors.As(err, &connErr) && credentialsRefused(connErr.err):
		// The server answered and refused: only the Secret can fix it.
		return stalled(jetsinkv1.ReasonNATSAuthFailed,
			"NATS at %s (source.url) refused the connection's credentials or TLS material (source.credentialsSecretRef, source.tls.secretRef): %v",
			redactURL(cfg.NATSURL), connErr.err)
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
// says to take it over; one that another live sink owns is never taken.
// An update changes only the fields the operator manages: where the
// consumer is in the stream (its deliver and replay policy, its start) is
// kept, so an adopted consumer resumes from its own position.
func (c consumers) ensure(ctx context.Context, cfg config.Config, want jetstream.ConsumerConfig, o owner, adopt bool,
	fleet claims) (ensured, error) {
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
		have := cons.CachedInfo().Config
		action := "Updated"
		if theirs, named := ownerIn(have.Metadata); !named || theirs.Namespace != o.Namespace || theirs.Name != o.Name {
			if p := foreignConsumer(cfg, have, want, o, theirs, named, adopt, fleet); p != nil {
				return p
			}
			action = "Adopted"
		}
		if p := unusable(cfg, have); p != nil {
			return p
		}
		if !consumerDiffers(have, want) {
			out = ensured{info: cons.CachedInfo()}
			return nil
		}
		cons, err = stream.UpdateConsumer(ctx, managedFields(have, want))
		if err != nil {
			return consumerProblem(cfg, want, "update", err)
		}
		out = ensured{info: cons.CachedInfo(), action: action}
		return nil
	})
	return out, err
}

// claims is what the rest of the fleet says about a consumer.
type claims interface {
	// exists tells whether the sink o names still exists.
	exists(o owner) bool
	// others are the sinks other than self that read consumer cfg.Consumer
	// of cfg.Stream on cfg.NATSURL.
	others(cfg config.Config, self owner) []owner
}

// foreignConsumer is the problem of a consumer the sink does not own, or nil
// when the sink may take it: adopt says so, or it is the sink's own from
// before consumers carried their owner (an earlier jetsink made it for this
// destination, and no other sink reads it).
func foreignConsumer(cfg config.Config, have, want jetstream.ConsumerConfig, self, theirs owner, named, adopt bool, fleet claims) *problem {
	switch {
	case named && fleet.exists(theirs):
		return stalled(jetsinkv1.ReasonConsumerOwnedElsewhere,
			"consumer %q on stream %q belongs to sink %s: two sinks cannot share a consumer; give this one another source.consumer",
			want.Durable, cfg.Stream, theirs)
	case adopt:
		return nil
	case named:
		return stalled(jetsinkv1.ReasonConsumerOwnedElsewhere,
			"consumer %q on stream %q was made for sink %s, which no longer exists: annotate this sink %s=true to take it over and resume from its position, or give it another source.consumer",
			want.Durable, cfg.Stream, theirs, jetsinkv1.AnnotationAdoptConsumer)
	case have.Description == want.Description:
		others := fleet.others(cfg, self)
		if len(others) == 0 {
			return nil // an earlier jetsink's consumer for this sink: take it, its position too
		}
		names := make([]string, len(others))
		for i, o := range others {
			names[i] = o.String()
		}
		return stalled(jetsinkv1.ReasonConsumerOwnedElsewhere,
			"consumer %q on stream %q is read by this sink and by %s (an earlier jetsink let sinks share it, splitting its events between them): give all but one of them another source.consumer",
			want.Durable, cfg.Stream, strings.Join(names, ", "))
	default:
		return stalled(jetsinkv1.ReasonConsumerOwnedElsewhere,
			"consumer %q on stream %q was not made by jetsink and is left untouched: give this sink another source.consumer, or annotate it %s=true to take the consumer over (its configuration is then rewritten to match the sink)",
			want.Durable, cfg.Stream, jetsinkv1.AnnotationAdoptConsumer)
	}
}

// unusable refuses a consumer the workers cannot read, whatever its owner:
// NATS cannot turn a push consumer into a pull one, nor change its ACK
// policy, and the workers pull and ACK each message.
func unusable(cfg config.Config, have jetstream.ConsumerConfig) *problem {
	switch {
	case have.DeliverSubject != "":
		return stalled(jetsinkv1.ReasonConsumerOwnedElsewhere,
			"consumer %q on stream %q is a push consumer (deliver subject %q); the workers pull: give this sink another source.consumer",
			have.Durable, cfg.Stream, have.DeliverSubject)
	case have.AckPolicy != jetstream.AckExplicitPolicy:
		return stalled(jetsinkv1.ReasonConsumerOwnedElsewhere,
			"consumer %q on stream %q has ACK policy %s, which NATS cannot change; the workers ACK each event: give this sink another source.consumer",
			have.Durable, cfg.Stream, have.AckPolicy)
	}
	return nil
}

// managedFields is have with the fields the operator manages set as want
// has them; everything else (where the consumer is in the stream, what the
// server set) stays, since NATS refuses to change most of it.
func managedFields(have, want jetstream.ConsumerConfig) jetstream.ConsumerConfig {
	c := have
	c.Description = want.Description
	c.AckWait = want.AckWait
	c.MaxDeliver = want.MaxDeliver
	c.MaxAckPending = want.MaxAckPending
	c.FilterSubject, c.FilterSubjects = want.FilterSubject, want.FilterSubjects
	c.Metadata = maps.Clone(have.Metadata)
	if c.Metadata == nil {
		c.Metadata = map[string]string{}
	}
	maps.Copy(c.Metadata, want.Metadata)
	return c
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
		if theirs, named := ownerIn(cons.CachedInfo().Config.Metadata); !named || theirs != o {
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

// refusedForTheSpec are the JetStream errors a consumer of this spec gets
// on this stream whatever is retried: the spec, or the stream, must change.
// Other refusals (the account's consumer limit, a name another sink just
// took) may pass and are retried as they are.
var refusedForTheSpec = map[jetstream.ErrorCode]string{
	10093: "source.filterSubjects are not within the stream's subjects",
	10099: "the stream is a work queue that already has an unfiltered consumer",
	10100: "the stream is a work queue and another consumer reads these subjects",
	10101: "the stream is a work queue",
	10102: "the consumer name is too long for NATS: set a shorter source.consumer",
}

// consumerProblem turns a failed consumer call into a problem.
func consumerProblem(cfg config.Config, want jetstream.ConsumerConfig, verb string, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeOverlappingFilterSubjects {
		return stalled(jetsinkv1.ReasonInvalidSpec, "source.filterSubjects overlap, which NATS refuses: %v", err)
	}
	if errors.As(err, &apiErr) {
		if why, ok := refusedForTheSpec[apiErr.ErrorCode]; ok {
			return stalled(jetsinkv1.ReasonConsumerRefused, "NATS refused consumer %q on stream %q: %s (%v)", want.Durable, cfg.Stream, why, err)
		}
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
