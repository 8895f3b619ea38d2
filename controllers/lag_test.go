package controllers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
)

// wantLag waits until the sink's status shows lag pending events.
func wantLag(t *testing.T, ns string, lag uint64) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		s, err := get(t, &jetsinkv1.WarehouseSink{}, ns, "events")
		if err != nil {
			return err
		}
		if c := s.Status.Consumer; c == nil || c.Lag != lag || c.NumPending != lag {
			return fmt.Errorf("consumer status = %+v, want lag %d", c, lag)
		}
		return nil
	})
}

// A thousand quiet sinks must not cost a thousand reconciles per refresh:
// once converged, the Lag column moves with the stream while the sink is
// not reconciled at all.
func TestLagFollowsTheStreamWithoutReconciles(t *testing.T) {
	ns, srv := withStream(t)
	_, js := srv.JetStream(t)
	mustCreate(t, newSink(ns, srv.ClientURL()))
	markRolledOut(t, ns, "events")
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionTrue, jetsinkv1.ReasonAvailable)
	// Let a reconcile already queued by the rollout run before counting.
	time.Sleep(statusRefresh / 2)
	key := types.NamespacedName{Namespace: ns, Name: "events"}
	before, start := reconciles.of(key), time.Now()

	publish := func(n int) {
		t.Helper()
		for i := range n {
			if _, err := js.Publish(t.Context(), "events.web", fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(3)
	wantLag(t, ns, 3)
	publish(4)
	wantLag(t, ns, 7)

	// Several refresh intervals: a sink requeued per interval would have
	// been reconciled a few times by now.
	time.Sleep(time.Until(start.Add(4 * statusRefresh)))
	if n := reconciles.of(key) - before; n != 0 {
		t.Errorf("the converged sink was reconciled %d times in %s while its lag was refreshed, want 0",
			n, time.Since(start).Round(100*time.Millisecond))
	}
}

// The refresher hands a consumer it cannot read back to the reconciler: one
// deleted behind the operator's back is recreated, and a server that went
// away shows on the sink.
func TestUnreadableConsumerIsReconciled(t *testing.T) {
	ns, srv := withStream(t)
	_, js := srv.JetStream(t)
	mustCreate(t, newSink(ns, srv.ClientURL()))
	wantCondition(t, ns, "events", jetsinkv1.ConditionDegraded, metav1.ConditionFalse, jetsinkv1.ReasonAsExpected)
	eventually(t, 10*time.Second, func() error {
		_, err := js.Consumer(t.Context(), "EVENTS", "warehouse")
		return err
	})

	if err := js.DeleteConsumer(t.Context(), "EVENTS", "warehouse"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		_, err := js.Consumer(t.Context(), "EVENTS", "warehouse")
		return err
	})

	srv.Shutdown()
	wantCondition(t, ns, "events", jetsinkv1.ConditionDegraded, metav1.ConditionTrue, jetsinkv1.ReasonNATSUnreachable)
	wantEvent(t, ns, jetsinkv1.ReasonNATSUnreachable)
}

// A new sink is converged by one reconcile: the Deployment and Service it
// creates do not wake it again (a fleet of new sinks would otherwise queue
// a second, empty reconcile each), while losing one still does.
func TestNewSinkConvergesInOneReconcile(t *testing.T) {
	ns, srv := withStream(t)
	mustCreate(t, newSink(ns, srv.ClientURL()))
	wantCondition(t, ns, "events", jetsinkv1.ConditionDegraded, metav1.ConditionFalse, jetsinkv1.ReasonAsExpected)
	if _, err := get(t, &corev1.Service{}, ns, "events-metrics"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * statusRefresh)
	key := types.NamespacedName{Namespace: ns, Name: "events"}
	if n := reconciles.of(key); n != 1 {
		t.Errorf("a new sink took %d reconciles, want 1", n)
	}

	dep, err := get(t, &appsv1.Deployment{}, ns, "events")
	if err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(t.Context(), dep); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		d, err := get(t, &appsv1.Deployment{}, ns, "events")
		if err == nil && d.UID == dep.UID {
			return errors.New("the deleted Deployment is still there")
		}
		return err
	})
}

// A bucket deleted under a converged sink shows on the sink once its
// workers start handing events back: the refresher sees more messages
// awaiting redelivery and has the sink reconciled, which checks the bucket.
func TestBucketLostAfterConvergenceShows(t *testing.T) {
	ns, srv := withStream(t)
	_, js := srv.JetStream(t)
	s3 := s3test.Start(t)
	s3.CreateBucket(t, "lake")
	sink := newSink(ns, srv.ClientURL())
	mustCreate(t, withS3(t, sink, s3, s3Keys))
	mustCreate(t, sink)
	wantCondition(t, ns, "events", jetsinkv1.ConditionDegraded, metav1.ConditionFalse, jetsinkv1.ReasonAsExpected)

	if err := os.RemoveAll(filepath.Join(s3.Dir, "lake")); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), "events.web", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// A worker that cannot write NAKs what it fetched, and gets it again.
	cons, err := js.Consumer(t.Context(), "EVENTS", "warehouse")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		msgs, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range msgs.Messages() {
			if err := m.Nak(); err != nil {
				t.Fatal(err)
			}
		}
	}
	wantCondition(t, ns, "events", jetsinkv1.ConditionDegraded, metav1.ConditionTrue, jetsinkv1.ReasonBucketNotFound)
	wantEvent(t, ns, jetsinkv1.ReasonBucketNotFound)
}
