package controllers

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/internal/testutil/natstest"
)

// handMade is a consumer someone made without jetsink, reading only new
// events (a deliver policy NATS cannot change).
var handMade = jetstream.ConsumerConfig{
	Durable: "theirs", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 10 * time.Minute, MaxDeliver: 3,
	FilterSubject: "events.other", DeliverPolicy: jetstream.DeliverNewPolicy,
}

func TestForeignConsumerIsLeftUntouchedUntilAdopted(t *testing.T) {
	ns, srv := withStream(t)
	_, js := srv.JetStream(t)
	if _, err := js.CreateConsumer(t.Context(), "EVENTS", handMade); err != nil {
		t.Fatal(err)
	}
	sink := newSink(ns, srv.ClientURL())
	sink.Spec.Source.Consumer = "theirs"
	sink.Spec.Source.ConsumerDeletionPolicy = jetsinkv1.ConsumerDelete
	mustCreate(t, sink)

	c := wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonConsumerOwnedElsewhere)
	for _, want := range []string{`"theirs"`, jetsinkv1.AnnotationAdoptConsumer} {
		if !strings.Contains(c.Message, want) {
			t.Errorf("message does not say %s: %q", want, c.Message)
		}
	}
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonConsumerOwnedElsewhere)
	wantEvent(t, ns, jetsinkv1.ReasonConsumerOwnedElsewhere)
	assertConsumer(t, js, "theirs", func(cc jetstream.ConsumerConfig) error {
		if cc.AckWait != 10*time.Minute || cc.MaxDeliver != 3 || cc.FilterSubject != "events.other" || cc.Metadata[metaName] != "" {
			return fmt.Errorf("the foreign consumer was changed: %+v", cc)
		}
		return nil
	})
	if _, err := get(t, &appsv1.Deployment{}, ns, "events"); !apierrors.IsNotFound(err) {
		t.Errorf("workers were started on a foreign consumer (err %v)", err)
	}

	// Adopting it is an explicit act: the consumer is then rewritten and
	// marked as the sink's, and resumes from its own position (its deliver
	// policy stays, or NATS would refuse the update for ever).
	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) {
		s.Annotations = map[string]string{jetsinkv1.AnnotationAdoptConsumer: "true"}
	})
	wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionFalse, jetsinkv1.ReasonAsExpected)
	wantEvent(t, ns, "ConsumerAdopted")
	assertConsumer(t, js, "theirs", func(cc jetstream.ConsumerConfig) error {
		if cc.AckWait != 2*time.Minute || cc.MaxDeliver != -1 || cc.FilterSubject != "events.>" || cc.Metadata[metaNamespace] != ns ||
			cc.DeliverPolicy != jetstream.DeliverNewPolicy {
			return fmt.Errorf("the adopted consumer does not match the sink, or lost its position: %+v", cc)
		}
		return nil
	})
}

// An earlier jetsink wrote no owner into its consumers (and defaulted every
// sink to "warehouse"): on upgrade a sink takes back the consumer made for
// its destination when no other sink reads it, and sinks that shared one
// are stalled, naming each other, with their workers stopped.
func TestConsumersOfAnEarlierJetsinkAfterAnUpgrade(t *testing.T) {
	srv := natstest.Start(t)
	srv.CreateStream(t, "EVENTS", "events.>")
	_, js := srv.JetStream(t)
	earlier := func(name string) {
		t.Helper()
		if _, err := js.CreateConsumer(t.Context(), "EVENTS", jetstream.ConsumerConfig{
			Durable: name, Description: "jetsink: events to s3://lake/events/", AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: 2 * time.Minute, MaxDeliver: -1, FilterSubject: "events.>",
		}); err != nil {
			t.Fatal(err)
		}
	}

	earlier("warehouse")
	alone := namespace(t)
	s := newSink(alone, srv.ClientURL())
	s.Spec.Source.Consumer = "warehouse"
	mustCreate(t, s)
	wantEvent(t, alone, "ConsumerAdopted")
	wantCondition(t, alone, "events", jetsinkv1.ConditionStalled, metav1.ConditionFalse, jetsinkv1.ReasonAsExpected)
	assertConsumer(t, js, "warehouse", func(cc jetstream.ConsumerConfig) error {
		if cc.Metadata[metaNamespace] != alone || cc.Metadata[metaName] != "events" {
			return fmt.Errorf("not marked as the sink's: %v", cc.Metadata)
		}
		return nil
	})

	// Both sinks exist before the operator looks at the consumer, as after
	// an upgrade: held back by an image the policy refuses, then let go.
	first, second := namespace(t), namespace(t)
	for _, ns := range []string{first, second} {
		s := newSink(ns, srv.ClientURL())
		s.Spec.Source.Consumer = "shared"
		s.Spec.Image = "elsewhere.example.com/held-back:1"
		mustCreate(t, s)
		wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonImageNotAllowed)
	}
	earlier("shared")
	for _, ns := range []string{first, second} {
		patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) { s.Spec.Image = "" })
	}
	for ns, other := range map[string]string{first: second, second: first} {
		c := wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonConsumerOwnedElsewhere)
		if !strings.Contains(c.Message, other+"/events") {
			t.Errorf("%s's message does not name %s/events: %q", ns, other, c.Message)
		}
	}
	assertConsumer(t, js, "shared", func(cc jetstream.ConsumerConfig) error {
		if len(cc.Metadata) != 0 && cc.Metadata[metaName] != "" {
			return fmt.Errorf("a shared consumer was taken: %v", cc.Metadata)
		}
		return nil
	})
}

// A converged sink whose consumer is replaced by one it does not own stops
// its workers: they must not go on reading someone else's consumer.
func TestWorkersStopWhenTheConsumerIsNoLongerTheSinks(t *testing.T) {
	ns, srv := withStream(t)
	_, js := srv.JetStream(t)
	converge(t, newSink(ns, srv.ClientURL()))

	if err := js.DeleteConsumer(t.Context(), "EVENTS", consumerName(ns)); err != nil {
		t.Fatal(err)
	}
	other := handMade
	other.Durable = consumerName(ns)
	if _, err := js.CreateConsumer(t.Context(), "EVENTS", other); err != nil {
		t.Fatal(err)
	}
	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) { s.Annotations = map[string]string{"touch": "1"} })
	wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonConsumerOwnedElsewhere)
	waitReplicas(t, ns, "events", 0)
}

// Deleting a sink deletes a consumer only if its metadata carries the
// sink's UID too: a sink of the same namespace and name in another cluster
// on the same server keeps its consumer.
func TestDeletionSparesAConsumerWithAnotherUID(t *testing.T) {
	ns, srv := withStream(t)
	_, js := srv.JetStream(t)
	sink := newSink(ns, srv.ClientURL())
	sink.Spec.Source.ConsumerDeletionPolicy = jetsinkv1.ConsumerDelete
	mustCreate(t, sink)
	assertConsumer(t, js, consumerName(ns), filterIs("events.>"))

	cons, err := js.Consumer(t.Context(), "EVENTS", consumerName(ns))
	if err != nil {
		t.Fatal(err)
	}
	cc := cons.CachedInfo().Config
	cc.Metadata[metaUID] = "uid-in-another-cluster"
	if _, err := js.UpdateConsumer(t.Context(), "EVENTS", cc); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(t.Context(), sink); err != nil {
		t.Fatal(err)
	}
	waitGone(t, ns, "events")
	wantEvent(t, ns, "ConsumerNotDeleted")
	if _, err := js.Consumer(t.Context(), "EVENTS", consumerName(ns)); err != nil {
		t.Errorf("the other cluster's consumer was deleted: %v", err)
	}
}

func TestTwoSinksOnOneStreamNeverShareAConsumer(t *testing.T) {
	srv := natstest.Start(t)
	srv.CreateStream(t, "EVENTS", "events.>")
	_, js := srv.JetStream(t)
	first, second := namespace(t), namespace(t)

	a := newSink(first, srv.ClientURL())
	a.Spec.Source.FilterSubjects = []string{"events.web"}
	mustCreate(t, a)
	b := newSink(second, srv.ClientURL())
	b.Spec.Source.FilterSubjects = []string{"events.ios"}
	mustCreate(t, b)
	// Same sink name, same stream, two namespaces: two consumers, each with
	// its own filter.
	assertConsumer(t, js, consumerName(first), filterIs("events.web"))
	assertConsumer(t, js, consumerName(second), filterIs("events.ios"))

	// A third sink naming the first one's consumer is refused, and the
	// consumer keeps its filter.
	third := namespace(t)
	c := newSink(third, srv.ClientURL())
	c.Spec.Source.Consumer = consumerName(first)
	c.Spec.Source.FilterSubjects = []string{"events.android"}
	c.Spec.Source.ConsumerDeletionPolicy = jetsinkv1.ConsumerDelete
	mustCreate(t, c)
	msg := wantCondition(t, third, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonConsumerOwnedElsewhere).Message
	if !strings.Contains(msg, first+"/events") {
		t.Errorf("message does not name the owning sink: %q", msg)
	}
	// Adopting a consumer another live sink owns is refused too.
	patchSink(t, third, func(s *jetsinkv1.WarehouseSink) {
		s.Annotations = map[string]string{jetsinkv1.AnnotationAdoptConsumer: "true"}
	})
	time.Sleep(2 * statusRefresh)
	wantCondition(t, third, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonConsumerOwnedElsewhere)
	assertConsumer(t, js, consumerName(first), filterIs("events.web"))

	// Deleting it under the Delete policy leaves the first sink's consumer.
	if err := k8s.Delete(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	waitGone(t, third, "events")
	assertConsumer(t, js, consumerName(first), filterIs("events.web"))
	wantEvent(t, third, "ConsumerNotDeleted")
}

func TestDeletionFinishesWithTheSecretGone(t *testing.T) {
	ns, srv := withStream(t)
	_, js := srv.JetStream(t)
	// The test server asks for no credentials, so any will do: what matters
	// is that the sink cannot be resolved once its Secret is gone.
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "nats-creds", Namespace: ns},
		StringData: map[string]string{"token": "s3cr3t"}}
	mustCreate(t, secret)
	sink := newSink(ns, srv.ClientURL())
	sink.Spec.Source.CredentialsSecretRef = &corev1.LocalObjectReference{Name: "nats-creds"}
	sink.Spec.Source.ConsumerDeletionPolicy = jetsinkv1.ConsumerDelete
	mustCreate(t, sink)
	assertConsumer(t, js, consumerName(ns), filterIs("events.>"))
	markRolledOut(t, ns, "events")
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionTrue, jetsinkv1.ReasonAvailable)

	// What a namespace deletion does: the Secret goes, and the sink.
	if err := k8s.Delete(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(t.Context(), sink); err != nil {
		t.Fatal(err)
	}
	// The workers are stopped first; their consumer stays while they drain.
	eventually(t, 10*time.Second, func() error {
		d, err := get(t, &appsv1.Deployment{}, ns, "events")
		if err != nil {
			return err
		}
		if *d.Spec.Replicas != 0 {
			return fmt.Errorf("Deployment replicas = %d, want 0 before the consumer goes", *d.Spec.Replicas)
		}
		return nil
	})
	if _, err := js.Consumer(t.Context(), "EVENTS", consumerName(ns)); err != nil {
		t.Errorf("consumer deleted while 2 workers still ran: %v", err)
	}
	// The pods are gone (what the Deployment controller would report).
	eventually(t, 10*time.Second, func() error {
		d, err := get(t, &appsv1.Deployment{}, ns, "events")
		if err != nil {
			return err
		}
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation}
		return k8s.Status().Update(t.Context(), d)
	})
	waitGone(t, ns, "events")
	if _, err := js.Consumer(t.Context(), "EVENTS", consumerName(ns)); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("consumer still there after the sink was deleted with policy Delete (err %v)", err)
	}
	wantEvent(t, ns, "ConsumerDeleted")
}

func TestDeletionGivesUpOnAServerThatIsGone(t *testing.T) {
	ns, srv := withStream(t)
	_, js := srv.JetStream(t)
	sink := newSink(ns, srv.ClientURL())
	sink.Spec.Source.ConsumerDeletionPolicy = jetsinkv1.ConsumerDelete
	mustCreate(t, sink)
	assertConsumer(t, js, consumerName(ns), filterIs("events.>"))

	srv.Shutdown()
	srv.WaitForShutdown()
	if err := k8s.Delete(t.Context(), sink); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, ns, "ConsumerDeleteFailed")
	// DeletionGiveUp is 10 s in the tests.
	eventually(t, 40*time.Second, func() error {
		if _, err := get(t, &jetsinkv1.WarehouseSink{}, ns, "events"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("sink still there (err %v)", err)
		}
		return nil
	})
	e := wantEvent(t, ns, "ConsumerNotDeleted")
	if !strings.Contains(e.Note, consumerName(ns)) || !strings.Contains(e.Note, "nats consumer rm") {
		t.Errorf("the Warning does not say what was left and how to remove it: %q", e.Note)
	}
	if e.Type != corev1.EventTypeWarning {
		t.Errorf("event type = %s, want Warning", e.Type)
	}
}

func TestDeadLettersTheSinkWouldReadBackAreRefused(t *testing.T) {
	ns, srv := withStream(t)
	sink := newSink(ns, srv.ClientURL())
	// No filter: the sink reads all of EVENTS (events.>), which captures the
	// dead-letter subject too.
	sink.Spec.Source.FilterSubjects = nil
	sink.Spec.Source.DeadLetterSubject = "events.dlq"
	mustCreate(t, sink)
	c := wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonInvalidSpec)
	if !strings.Contains(c.Message, "source.deadLetterSubject") {
		t.Errorf("message does not name the field: %q", c.Message)
	}
}

func TestImageOverridesFollowTheManagersPolicy(t *testing.T) {
	ns, srv := withStream(t)
	sink := newSink(ns, srv.ClientURL())
	sink.Spec.Image = "evil.example.com/miner:latest"
	mustCreate(t, sink)
	c := wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonImageNotAllowed)
	if !strings.Contains(c.Message, "spec.image") || !strings.Contains(c.Message, allowedImages) {
		t.Errorf("message does not say what is allowed: %q", c.Message)
	}
	if _, err := get(t, &appsv1.Deployment{}, ns, "events"); !apierrors.IsNotFound(err) {
		t.Errorf("a Deployment was created with a forbidden image (err %v)", err)
	}
	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) { s.Spec.Image = "registry.example.com/jetsink/worker:1.2" })
	eventually(t, 20*time.Second, func() error {
		d, err := get(t, &appsv1.Deployment{}, ns, "events")
		if err != nil {
			return err
		}
		if img := d.Spec.Template.Spec.Containers[0].Image; img != "registry.example.com/jetsink/worker:1.2" {
			return fmt.Errorf("image = %s", img)
		}
		return nil
	})
}

func TestSuspendKeepsTheConsumerAndSaysSo(t *testing.T) {
	ns, srv := withStream(t)
	_, js := srv.JetStream(t)
	converge(t, newSink(ns, srv.ClientURL()))

	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) { s.Spec.Suspend = true })
	eventually(t, 20*time.Second, func() error {
		d, err := get(t, &appsv1.Deployment{}, ns, "events")
		if err != nil {
			return err
		}
		if *d.Spec.Replicas != 0 {
			return fmt.Errorf("suspended sink's Deployment has %d replicas", *d.Spec.Replicas)
		}
		return nil
	})
	markRolledOut(t, ns, "events")
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonSuspended)
	wantEvent(t, ns, "Scaled")
	if _, err := js.Consumer(t.Context(), "EVENTS", consumerName(ns)); err != nil {
		t.Errorf("suspending lost the consumer: %v", err)
	}
}

func TestDisruptionBudgetFollowsTheSink(t *testing.T) {
	ns, srv := withStream(t)
	mustCreate(t, newSink(ns, srv.ClientURL()))
	eventually(t, 20*time.Second, func() error {
		pdb, err := get(t, &policyv1.PodDisruptionBudget{}, ns, "events")
		if err != nil {
			return err
		}
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 ||
			pdb.Spec.Selector.MatchLabels["app.kubernetes.io/instance"] != "events" {
			return fmt.Errorf("PodDisruptionBudget = %+v", pdb.Spec)
		}
		return nil
	})
	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) { s.Spec.PodDisruptionBudget.Enabled = ptr.To(false) })
	eventually(t, 20*time.Second, func() error {
		if _, err := get(t, &policyv1.PodDisruptionBudget{}, ns, "events"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("PodDisruptionBudget still there (err %v)", err)
		}
		return nil
	})
}

// assertConsumer waits until the named consumer exists and check passes.
func assertConsumer(t *testing.T, js jetstream.JetStream, name string, check func(jetstream.ConsumerConfig) error) {
	t.Helper()
	eventually(t, 20*time.Second, func() error {
		cons, err := js.Consumer(t.Context(), "EVENTS", name)
		if err != nil {
			return fmt.Errorf("consumer %s: %w", name, err)
		}
		return check(cons.CachedInfo().Config)
	})
}

func filterIs(subject string) func(jetstream.ConsumerConfig) error {
	return func(cc jetstream.ConsumerConfig) error {
		if cc.FilterSubject != subject {
			return fmt.Errorf("consumer %s filters %q %v, want %q", cc.Durable, cc.FilterSubject, cc.FilterSubjects, subject)
		}
		return nil
	}
}

// waitGone waits for the sink to be deleted.
func waitGone(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, 20*time.Second, func() error {
		s, err := get(t, &jetsinkv1.WarehouseSink{}, ns, name)
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("sink still there (finalizers %v, err %v)", s.Finalizers, err)
		}
		return nil
	})
}

// eventsOf lists the Events of a namespace's sinks with the given reason.
func eventsOf(t *testing.T, ns, reason string) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := k8s.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Reason == reason && e.Regarding.Kind == "WarehouseSink" {
			out = append(out, e)
		}
	}
	return out
}
