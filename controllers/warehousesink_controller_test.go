package controllers

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
	"github.com/jetsink/jetsink/internal/testutil/natstest"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
)

// eventually retries check until it returns nil or the timeout passes, and
// fails the test with check's last error.
func eventually(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// withStream gives a test its own namespace and a JetStream server holding
// the EVENTS stream.
func withStream(t *testing.T) (string, *natstest.Server) {
	t.Helper()
	srv := natstest.Start(t)
	srv.CreateStream(t, "EVENTS", "events.>")
	return namespace(t), srv
}

func newSink(ns, natsURL string) *jetsinkv1.WarehouseSink {
	return &jetsinkv1.WarehouseSink{
		ObjectMeta: metav1.ObjectMeta{Name: "events", Namespace: ns},
		Spec: jetsinkv1.WarehouseSinkSpec{
			Replicas: ptr.To[int32](2),
			Source: jetsinkv1.SourceSpec{
				URL: natsURL, Stream: "EVENTS", FilterSubjects: []string{"events.>"},
				DeadLetterSubject: "dlq.events",
			},
			Destination: jetsinkv1.DestinationSpec{Bucket: "lake", Prefix: "events/"},
		},
	}
}

// consumerName is the consumer the operator derives for a sink named
// "events" in ns.
func consumerName(ns string) string { return "jetsink_" + ns + "_events" }

// withS3 points the sink at a real S3 server (versitygw) and a Secret
// holding the given keys; it returns that Secret, not yet created.
func withS3(t *testing.T, sink *jetsinkv1.WarehouseSink, s3 *s3test.Server, keys map[string]string) *corev1.Secret {
	t.Helper()
	sink.Spec.Destination.Endpoint = s3.URL
	sink.Spec.Destination.ForcePathStyle = true
	sink.Spec.Destination.CredentialsSecretRef = &corev1.LocalObjectReference{Name: "s3-creds"}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s3-creds", Namespace: sink.Namespace}, StringData: keys}
}

var s3Keys = map[string]string{"AWS_ACCESS_KEY_ID": s3test.AccessKey, "AWS_SECRET_ACCESS_KEY": s3test.SecretKey}

// sinkOnS3 starts an S3 server with the bucket "lake" and creates the test
// sink in ns pointed at it, after its Secret with the given keys; edits
// change the sink before it is created.
func sinkOnS3(t *testing.T, ns string, srv *natstest.Server, keys map[string]string, edits ...func(*jetsinkv1.WarehouseSink)) (*jetsinkv1.WarehouseSink, *corev1.Secret) {
	t.Helper()
	s3 := s3test.Start(t)
	s3.CreateBucket(t, "lake")
	sink := newSink(ns, srv.ClientURL())
	for _, edit := range edits {
		edit(sink)
	}
	secret := withS3(t, sink, s3, keys)
	mustCreate(t, secret)
	mustCreate(t, sink)
	return sink, secret
}

// converge creates the sink, marks its workers rolled out and waits for Ready.
func converge(t *testing.T, sink *jetsinkv1.WarehouseSink) {
	t.Helper()
	mustCreate(t, sink)
	markRolledOut(t, sink.Namespace, sink.Name)
	wantCondition(t, sink.Namespace, sink.Name, jetsinkv1.ConditionReady, metav1.ConditionTrue, jetsinkv1.ReasonAvailable)
}

func get[T client.Object](t *testing.T, obj T, ns, name string) (T, error) {
	t.Helper()
	err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, obj)
	return obj, err
}

func condition(t *testing.T, ns, name, typ string) (*metav1.Condition, error) {
	t.Helper()
	sink, err := get(t, &jetsinkv1.WarehouseSink{}, ns, name)
	if err != nil {
		return nil, err
	}
	c := apimeta.FindStatusCondition(sink.Status.Conditions, typ)
	if c == nil {
		return nil, fmt.Errorf("no %s condition yet; status %+v", typ, sink.Status)
	}
	return c, nil
}

// wantCondition waits for a condition with the given status and reason.
func wantCondition(t *testing.T, ns, name, typ string, status metav1.ConditionStatus, reason string) *metav1.Condition {
	t.Helper()
	var got *metav1.Condition
	eventually(t, 20*time.Second, func() error {
		c, err := condition(t, ns, name, typ)
		if err != nil {
			return err
		}
		if c.Status != status || c.Reason != reason {
			return fmt.Errorf("%s = %s/%s (%s), want %s/%s", typ, c.Status, c.Reason, c.Message, status, reason)
		}
		got = c
		return nil
	})
	return got
}

// wantEvent waits for an Event on the sink with the given reason.
func wantEvent(t *testing.T, ns, reason string) eventsv1.Event {
	t.Helper()
	var found eventsv1.Event
	eventually(t, 20*time.Second, func() error {
		var list eventsv1.EventList
		if err := k8s.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		var seen []string
		for _, e := range list.Items {
			if e.Reason == reason && e.Regarding.Kind == "WarehouseSink" {
				found = e
				return nil
			}
			seen = append(seen, e.Reason)
		}
		return fmt.Errorf("no %s event; saw %v", reason, seen)
	})
	return found
}

// markRolledOut stands in for the Deployment controller and kubelet, which
// envtest does not run: every replica updated, ready and available.
func markRolledOut(t *testing.T, ns, name string) {
	t.Helper()
	markAvailable(t, ns, name, allReplicas)
}

func TestSinkBecomesDeploymentServiceConsumerAndStatus(t *testing.T) {
	ns, srv := withStream(t)
	sink, _ := sinkOnS3(t, ns, srv, s3Keys)

	var dep *appsv1.Deployment
	eventually(t, 20*time.Second, func() (err error) {
		dep, err = get(t, &appsv1.Deployment{}, ns, "events")
		return err
	})
	if !metav1.IsControlledBy(dep, sink) {
		t.Errorf("Deployment owner references = %+v, want the sink as controller", dep.OwnerReferences)
	}
	if *dep.Spec.Replicas != 2 {
		t.Errorf("replicas = %d", *dep.Spec.Replicas)
	}
	pod := dep.Spec.Template.Spec
	if got := *pod.TerminationGracePeriodSeconds; got != 30+workload.GracePeriodMargin {
		t.Errorf("grace period = %d, want defaulted shutdownTimeout 30s + margin", got)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range pod.Containers[0].Env {
		env[e.Name] = e
	}
	if env["JETSINK_STREAM"].Value != "EVENTS" || env["JETSINK_S3_BUCKET"].Value != "lake" || env["JETSINK_ACK_WAIT"].Value != "2m0s" {
		t.Errorf("worker env does not carry the (defaulted) spec: %v", env)
	}
	if ref := env["AWS_ACCESS_KEY_ID"].ValueFrom; ref == nil || ref.SecretKeyRef.Name != "s3-creds" {
		t.Errorf("S3 credentials not taken from the Secret: %+v", env["AWS_ACCESS_KEY_ID"])
	}

	// The Service is created right after the Deployment, by the same reconcile.
	var svc *corev1.Service
	eventually(t, 10*time.Second, func() (err error) {
		svc, err = get(t, &corev1.Service{}, ns, "events-metrics")
		return err
	})
	if !metav1.IsControlledBy(svc, sink) || svc.Spec.Ports[0].Port != 9090 {
		t.Errorf("Service = %+v owners %+v", svc.Spec.Ports, svc.OwnerReferences)
	}

	_, js := srv.JetStream(t)
	cons, err := js.Consumer(t.Context(), "EVENTS", consumerName(ns))
	if err != nil {
		t.Fatalf("consumer not created: %v", err)
	}
	if md := cons.CachedInfo().Config.Metadata; md["jetsink.dev/namespace"] != ns || md["jetsink.dev/name"] != "events" ||
		md["jetsink.dev/uid"] != string(sink.UID) {
		t.Errorf("consumer metadata does not name its sink: %v", md)
	}
	cc := cons.CachedInfo().Config
	if cc.AckPolicy != jetstream.AckExplicitPolicy || cc.AckWait != 2*time.Minute || cc.MaxDeliver != -1 ||
		cc.FilterSubject != "events.>" || cc.MaxAckPending < 2*4*500 {
		t.Errorf("consumer config = %+v", cc)
	}

	// No pods run in envtest: the sink waits for its workers.
	wantCondition(t, ns, "events", jetsinkv1.ConditionReconciling, metav1.ConditionTrue, jetsinkv1.ReasonRollingOut)
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonWorkersUnavailable)

	markRolledOut(t, ns, "events")
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionTrue, jetsinkv1.ReasonAvailable)
	wantCondition(t, ns, "events", jetsinkv1.ConditionReconciling, metav1.ConditionFalse, jetsinkv1.ReasonRolledOut)
	wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionFalse, jetsinkv1.ReasonAsExpected)
	got, _ := get(t, &jetsinkv1.WarehouseSink{}, ns, "events")
	if got.Status.ObservedGeneration != got.Generation || got.Status.ReadyReplicas != 2 || got.Status.Consumer.Name != consumerName(ns) ||
		got.Status.Selector != "app.kubernetes.io/instance=events,app.kubernetes.io/name=jetsink-sinkworker" {
		t.Errorf("status = %+v", got.Status)
	}

	// The lag in the status follows the stream.
	for i := range 5 {
		if _, err := js.Publish(t.Context(), "events.web", []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, func() error {
		s, _ := get(t, &jetsinkv1.WarehouseSink{}, ns, "events")
		if s.Status.Consumer == nil || s.Status.Consumer.NumPending != 5 || s.Status.Consumer.Lag != 5 {
			return fmt.Errorf("consumer status = %+v, want 5 pending, lag 5", s.Status.Consumer)
		}
		return nil
	})

	// Delivered but not yet ACKed (waiting in a batch) is still lag. A
	// shift from pending to awaiting ACK alone leaves the lag as it was and
	// is not worth a status write; 300 more events are.
	msgs, err := js.Consumer(t.Context(), "EVENTS", consumerName(ns))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := msgs.FetchNoWait(3)
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	for i := range 300 {
		if _, err := js.Publish(t.Context(), "events.web", []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, func() error {
		s, _ := get(t, &jetsinkv1.WarehouseSink{}, ns, "events")
		if c := s.Status.Consumer; c == nil || c.NumPending != 302 || c.NumAckPending != 3 || c.Lag != 305 {
			return fmt.Errorf("consumer status = %+v, want 302 pending + 3 awaiting ACK = lag 305", c)
		}
		return nil
	})
}

func TestScalingAndShutdownTimeoutFollowTheSink(t *testing.T) {
	ns, srv := withStream(t)
	sink := newSink(ns, srv.ClientURL())
	mustCreate(t, sink)
	deploymentReplicas := func(want int32) {
		t.Helper()
		eventually(t, 20*time.Second, func() error {
			d, err := get(t, &appsv1.Deployment{}, ns, "events")
			if err != nil {
				return err
			}
			if *d.Spec.Replicas != want {
				return fmt.Errorf("Deployment replicas = %d, want %d", *d.Spec.Replicas, want)
			}
			return nil
		})
	}
	deploymentReplicas(2)

	// Edit spec.replicas.
	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) { s.Spec.Replicas = ptr.To[int32](4) })
	deploymentReplicas(4)

	// `kubectl scale sink/events --replicas=1` goes through /scale.
	// The status moves meanwhile (the lag refresher), so the update may
	// conflict: read and write again, as patchSink does.
	scale := &autoscalingv1.Scale{}
	eventually(t, 10*time.Second, func() error {
		if err := k8s.SubResource("scale").Get(t.Context(), sink, scale); err != nil {
			return err
		}
		scale.Spec.Replicas = 1
		return k8s.SubResource("scale").Update(t.Context(), sink, client.WithSubResourceBody(scale))
	})
	deploymentReplicas(1)

	// The /scale subresource reports the selector an HPA needs.
	markRolledOut(t, ns, "events")
	eventually(t, 10*time.Second, func() error {
		if err := k8s.SubResource("scale").Get(t.Context(), sink, scale); err != nil {
			return err
		}
		if scale.Status.Replicas != 1 || !strings.Contains(scale.Status.Selector, "app.kubernetes.io/instance=events") {
			return fmt.Errorf("scale status = %+v", scale.Status)
		}
		return nil
	})

	// A new shutdownTimeout changes the pods' grace period.
	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) {
		s.Spec.ShutdownTimeout = &metav1.Duration{Duration: 90 * time.Second}
	})
	eventually(t, 20*time.Second, func() error {
		d, _ := get(t, &appsv1.Deployment{}, ns, "events")
		if got := *d.Spec.Template.Spec.TerminationGracePeriodSeconds; got != 90+workload.GracePeriodMargin {
			return fmt.Errorf("grace period = %d", got)
		}
		return nil
	})
}

func TestMissingSecretIsReportedThenResolved(t *testing.T) {
	ns, srv := withStream(t)
	s3 := s3test.Start(t)
	s3.CreateBucket(t, "lake")
	sink := newSink(ns, srv.ClientURL())
	secret := withS3(t, sink, s3, map[string]string{"AWS_ACCESS_KEY_ID": s3test.AccessKey})
	mustCreate(t, sink)

	c := wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonSecretNotFound)
	if !strings.Contains(c.Message, `"s3-creds"`) || !strings.Contains(c.Message, "destination.credentialsSecretRef") {
		t.Errorf("message does not say which Secret and field: %q", c.Message)
	}
	wantEvent(t, ns, jetsinkv1.ReasonSecretNotFound)
	if _, err := get(t, &appsv1.Deployment{}, ns, "events"); !apierrors.IsNotFound(err) {
		t.Errorf("a Deployment was created without its Secret (err %v)", err)
	}

	// A Secret without the required keys is reported as such.
	mustCreate(t, secret)
	c = wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonSecretKeyMissing)
	if !strings.Contains(c.Message, "AWS_SECRET_ACCESS_KEY") {
		t.Errorf("message does not name the missing key: %q", c.Message)
	}

	// Fixing the Secret resumes the sink without any change to it.
	secret.StringData = map[string]string{"AWS_SECRET_ACCESS_KEY": s3test.SecretKey}
	if err := k8s.Update(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionFalse, jetsinkv1.ReasonAsExpected)
	if _, err := get(t, &appsv1.Deployment{}, ns, "events"); err != nil {
		t.Errorf("no Deployment after the Secret appeared: %v", err)
	}
	wantEvent(t, ns, "Recovered")
}

func TestWrongS3CredentialsAreReported(t *testing.T) {
	ns, srv := withStream(t)
	_, secret := sinkOnS3(t, ns, srv, map[string]string{"AWS_ACCESS_KEY_ID": s3test.AccessKey, "AWS_SECRET_ACCESS_KEY": "wrong"})

	c := wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonS3AccessDenied)
	if !strings.Contains(c.Message, `"s3-creds"`) || !strings.Contains(c.Message, "credentials") {
		t.Errorf("message does not say the credentials were refused: %q", c.Message)
	}
	wantEvent(t, ns, jetsinkv1.ReasonS3AccessDenied)
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonS3AccessDenied)

	// A bucket that does not exist is told apart from refused keys.
	secret.StringData = s3Keys
	if err := k8s.Update(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Bucket = "no-such-bucket" })
	c = wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonBucketNotFound)
	if !strings.Contains(c.Message, "no-such-bucket") {
		t.Errorf("message does not name the bucket: %q", c.Message)
	}
}

func TestUnreachableNATSAndMissingStreamAreReported(t *testing.T) {
	ns := namespace(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().String()
	l.Close()
	mustCreate(t, newSink(ns, "nats://"+closedPort))
	// A server that does not answer may come back: the sink is still
	// reconciling (kstatus InProgress), not stalled.
	c := wantCondition(t, ns, "events", jetsinkv1.ConditionReconciling, metav1.ConditionTrue, jetsinkv1.ReasonNATSUnreachable)
	if !strings.Contains(c.Message, closedPort) {
		t.Errorf("message does not name the server: %q", c.Message)
	}
	wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionFalse, jetsinkv1.ReasonAsExpected)
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonNATSUnreachable)
	wantEvent(t, ns, jetsinkv1.ReasonNATSUnreachable)

	// source.url cannot change in place, so the missing stream gets a sink
	// of its own.
	ns = namespace(t)
	srv := natstest.Start(t) // a server, but without the stream
	mustCreate(t, newSink(ns, srv.ClientURL()))
	c = wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonStreamNotFound)
	if !strings.Contains(c.Message, `"EVENTS"`) {
		t.Errorf("message does not name the stream: %q", c.Message)
	}
	if _, err := get(t, &appsv1.Deployment{}, ns, "events"); !apierrors.IsNotFound(err) {
		t.Errorf("a Deployment was created without a stream (err %v)", err)
	}

	// The stream appears: the retry (with backoff, no edit) picks it up.
	srv.CreateStream(t, "EVENTS", "events.>")
	wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionFalse, jetsinkv1.ReasonAsExpected)
}

func TestObjectNotOwnedIsLeftAloneAndReported(t *testing.T) {
	ns, srv := withStream(t)
	theirs := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "events", Namespace: ns, Labels: map[string]string{"owner": "someone-else"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](7),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "theirs"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "theirs"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "theirs:1"}}},
			},
		},
	}
	mustCreate(t, theirs)
	mustCreate(t, newSink(ns, srv.ClientURL()))
	c := wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonNameConflict)
	if !strings.Contains(c.Message, "Deployment") {
		t.Errorf("message = %q", c.Message)
	}
	d, _ := get(t, &appsv1.Deployment{}, ns, "events")
	if *d.Spec.Replicas != 7 || d.Spec.Template.Spec.Containers[0].Image != "theirs:1" || len(d.OwnerReferences) != 0 {
		t.Errorf("the foreign Deployment was changed: %+v", d.Spec)
	}
}

func TestDeletionPolicy(t *testing.T) {
	for _, policy := range []jetsinkv1.ConsumerDeletionPolicy{jetsinkv1.ConsumerDelete, jetsinkv1.ConsumerRetain} {
		t.Run(string(policy), func(t *testing.T) {
			ns, srv := withStream(t)
			_, js := srv.JetStream(t)
			sink := newSink(ns, srv.ClientURL())
			sink.Spec.Source.ConsumerDeletionPolicy = policy
			mustCreate(t, sink)
			eventually(t, 20*time.Second, func() error {
				_, err := js.Consumer(t.Context(), "EVENTS", consumerName(ns))
				return err
			})
			if policy == jetsinkv1.ConsumerDelete {
				eventually(t, 10*time.Second, func() error {
					s, _ := get(t, &jetsinkv1.WarehouseSink{}, ns, "events")
					if len(s.Finalizers) == 0 {
						return errors.New("no finalizer guards the consumer")
					}
					return nil
				})
			}
			if err := k8s.Delete(t.Context(), sink); err != nil {
				t.Fatal(err)
			}
			eventually(t, 20*time.Second, func() error {
				if _, err := get(t, &jetsinkv1.WarehouseSink{}, ns, "events"); !apierrors.IsNotFound(err) {
					return fmt.Errorf("sink still there (err %v)", err)
				}
				return nil
			})
			_, err := js.Consumer(t.Context(), "EVENTS", consumerName(ns))
			switch policy {
			case jetsinkv1.ConsumerDelete:
				if !errors.Is(err, jetstream.ErrConsumerNotFound) {
					t.Errorf("consumer still exists after delete with policy Delete (err %v)", err)
				}
			case jetsinkv1.ConsumerRetain:
				if err != nil {
					t.Errorf("consumer gone after delete with policy Retain: %v", err)
				}
			}
		})
	}
}

func TestDefaultsAreFilledIn(t *testing.T) {
	ns := namespace(t)
	s := newSink(ns, "nats://127.0.0.1:1")
	s.Spec.Replicas = nil
	mustCreate(t, s)
	got, _ := get(t, &jetsinkv1.WarehouseSink{}, ns, "events")
	sp := got.Spec
	if *sp.Replicas != 1 || sp.WorkersPerReplica != 4 || sp.ShutdownTimeout.Duration != 30*time.Second ||
		sp.Source.Consumer != "" || sp.Source.AckWait.Duration != 2*time.Minute || sp.Source.MaxDeliver != 10 ||
		sp.Source.FetchBatchSize != 500 || sp.Source.ConsumerDeletionPolicy != jetsinkv1.ConsumerRetain ||
		sp.Batch.MaxEvents != 10000 || sp.Batch.MaxBytes.String() != "64Mi" || sp.Batch.MaxAge.Duration != time.Minute ||
		sp.Parquet.Compression != "zstd" || sp.Partitioning.TimeGranularity != "hour" || sp.Destination.Region != "us-east-1" {
		t.Errorf("defaults = %+v", sp)
	}
}

func mustCreate(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(t.Context(), obj); err != nil {
		t.Fatalf("create %T: %v", obj, err)
	}
}

func patchSink(t *testing.T, ns string, edit func(*jetsinkv1.WarehouseSink)) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		s, err := get(t, &jetsinkv1.WarehouseSink{}, ns, "events")
		if err != nil {
			return err
		}
		edit(s)
		return k8s.Update(t.Context(), s)
	})
}
