package controllers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
)

// wantLag waits until the sink's status shows pending events not yet
// delivered (and none awaiting an ACK).
func wantLag(t *testing.T, ns string, pending uint64) *jetsinkv1.WarehouseSink {
	t.Helper()
	var sink *jetsinkv1.WarehouseSink
	eventually(t, 10*time.Second, func() (err error) {
		if sink, err = get(t, &jetsinkv1.WarehouseSink{}, ns, "events"); err != nil {
			return err
		}
		if c := sink.Status.Consumer; c == nil || c.Lag != pending || c.NumPending != pending {
			return fmt.Errorf("consumer status = %+v, want lag %d", c, pending)
		}
		return nil
	})
	return sink
}

func publish(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	for i := range n {
		if _, err := js.Publish(t.Context(), "events.web", fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
}

// A thousand quiet sinks must not cost a thousand reconciles per refresh:
// once converged, the Lag column moves with the stream while the sink is
// not reconciled at all.
func TestLagFollowsTheStreamWithoutReconciles(t *testing.T) {
	ns, srv := withStream(t)
	_, js := srv.JetStream(t)
	converge(t, newSink(ns, srv.ClientURL()))
	// Let a reconcile already queued by the rollout run before counting.
	time.Sleep(statusRefresh / 2)
	key := types.NamespacedName{Namespace: ns, Name: "events"}
	before, start := reconciles.of(key), time.Now()

	publish(t, js, 3) // out of zero: shown
	wantLag(t, ns, 3)
	publish(t, js, 500) // more than lagWriteMinDelta: shown
	if s := wantLag(t, ns, 503); s.Status.Consumer.Name != consumerName(ns) {
		t.Errorf("status.consumer.name = %q, want %q", s.Status.Consumer.Name, consumerName(ns))
	}

	// Several refresh intervals: a sink requeued per interval would have
	// been reconciled a few times by now.
	time.Sleep(time.Until(start.Add(4 * statusRefresh)))
	if n := reconciles.of(key) - before; n != 0 {
		t.Errorf("the converged sink was reconciled %d times in %s while its lag was refreshed, want 0",
			n, time.Since(start).Round(100*time.Millisecond))
	}
}

// The status is written when the lag moves meaningfully, not on every
// tick: workers fetching and holding events (numAckPending), handing some
// back (numRedelivered) or a trickle of new events neither write the
// status nor wake the reconciler, while the Prometheus gauges show every
// tick's figures. A backlog that grows does show.
func TestStatusWritesOnlyWhenLagMovesMeaningfully(t *testing.T) {
	ns, srv := withStream(t)
	nc, js := srv.JetStream(t)
	mustCreate(t, newSink(ns, srv.ClientURL()))
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonWorkersUnavailable)
	publish(t, js, 3)
	wantLag(t, ns, 3)
	key := types.NamespacedName{Namespace: ns, Name: "events"}

	// A worker fetches two events and holds them; it hands one back and
	// gets it again (redelivered).
	cons, err := js.Consumer(t.Context(), "EVENTS", consumerName(ns))
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(n int) []jetstream.Msg {
		t.Helper()
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) != n {
			t.Fatalf("fetched %d messages, want %d", len(msgs), n)
		}
		return msgs
	}
	held := fetch(2)
	if err := held[1].Nak(); err != nil {
		t.Fatal(err)
	}
	// The NAK reaches the server before the next fetch (or that fetch
	// takes the third event instead of the redelivery).
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	again := fetch(1)
	if md, err := again[0].Metadata(); err != nil || md.NumDelivered != 2 {
		t.Fatalf("the second fetch got %+v (%v), want the NAKed event again", md, err)
	}
	held = append(held[:1], again...)
	wantGauges(t, key, 1, 2, 1)

	// A reconcile (an annotation wakes one) shows the figures as they are
	// and hands the sink back to the refresher, whose destination recheck
	// is then ten intervals away.
	recons := reconciles.of(key)
	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) { metav1.SetMetaDataAnnotation(&s.ObjectMeta, "test/poke", "1") })
	var shown *jetsinkv1.WarehouseSink
	eventually(t, 10*time.Second, func() (err error) {
		if shown, err = get(t, &jetsinkv1.WarehouseSink{}, ns, "events"); err != nil {
			return err
		}
		if c := shown.Status.Consumer; reconciles.of(key) == recons || c == nil || c.NumAckPending != 2 {
			return fmt.Errorf("not reconciled yet; consumer status %+v", c)
		}
		return nil
	})
	recons = reconciles.of(key)

	// Ten more events and an ACK: the gauges follow...
	publish(t, js, 10)
	if err := held[0].DoubleAck(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantGauges(t, key, 11, 1, 1)
	// ...while the status, a few ticks on, is not written again.
	time.Sleep(3 * statusRefresh)
	now, err := get(t, &jetsinkv1.WarehouseSink{}, ns, "events")
	if err != nil {
		t.Fatal(err)
	}
	if now.ResourceVersion != shown.ResourceVersion {
		t.Errorf("status rewritten for a small move: %+v → %+v", *shown.Status.Consumer, *now.Status.Consumer)
	}
	if n := reconciles.of(key) - recons; n != 0 {
		t.Errorf("the sink was reconciled %d times as its workers held and redelivered events, want 0", n)
	}

	// A backlog of 500 more is shown.
	writes := counterValue(t, "jetsink_lag_status_writes_total")
	publish(t, js, 500)
	eventually(t, 10*time.Second, func() error {
		s, err := get(t, &jetsinkv1.WarehouseSink{}, ns, "events")
		if err != nil {
			return err
		}
		if c := s.Status.Consumer; c.NumPending != 511 || c.NumAckPending != 1 || c.Lag != 512 || c.NumRedelivered != 1 {
			return fmt.Errorf("consumer status = %+v, want numPending 511, numAckPending 1", *c)
		}
		return nil
	})
	if w := counterValue(t, "jetsink_lag_status_writes_total"); w <= writes {
		t.Errorf("jetsink_lag_status_writes_total = %v after a write, was %v", w, writes)
	}
	if h := histogramCount(t, "jetsink_lag_refresh_duration_seconds"); h == 0 {
		t.Error("jetsink_lag_refresh_duration_seconds has no observation")
	}

	// A deleted sink's series go with it.
	if err := k8s.Delete(t.Context(), now); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if _, ok := sinkMetric(t, "jetsink_sink_consumer_lag", key); ok {
			return errors.New("the deleted sink still has a jetsink_sink_consumer_lag series")
		}
		return nil
	})
}

// wantGauges waits until the sink's gauges on the manager's registry read
// the given numPending, numAckPending and numRedelivered.
func wantGauges(t *testing.T, key types.NamespacedName, pending, ackPending, redelivered float64) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		var got []float64
		for _, name := range []string{"jetsink_sink_consumer_lag", "jetsink_sink_consumer_ack_pending", "jetsink_sink_consumer_redelivered"} {
			v, ok := sinkMetric(t, name, key)
			if !ok {
				return fmt.Errorf("no %s series for the sink", name)
			}
			got = append(got, v)
		}
		if want := []float64{pending, ackPending, redelivered}; fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("lag, ack pending, redelivered gauges = %v, want %v", got, want)
		}
		return nil
	})
}

// lagWorthWriting's thresholds, one case each.
func TestLagWorthWriting(t *testing.T) {
	st := func(pending uint64, ackPending int64) *jetsinkv1.ConsumerStatus {
		return &jetsinkv1.ConsumerStatus{Name: "c", NumPending: pending, NumAckPending: ackPending,
			Lag: pending + uint64(ackPending)}
	}
	renamed := st(10, 0)
	renamed.Name = "other"
	for _, c := range []struct {
		name     string
		was, now *jetsinkv1.ConsumerStatus
		age      time.Duration
		want     bool
	}{
		{"nothing shown yet", nil, st(0, 0), 0, true},
		{"unchanged, however old", st(10, 5), st(10, 5), time.Hour, false},
		{"another consumer", st(10, 0), renamed, 0, true},
		{"ack pending swings", st(0, 10), st(0, 9000), time.Minute, false},
		{"ack pending swings, shown long ago", st(0, 10), st(0, 9000), lagWriteMaxAge, true},
		{"falls behind", st(0, 0), st(1, 0), 0, true},
		{"every held event written", st(0, 32500), st(0, 0), time.Second, true},
		{"held events rise from zero", st(0, 0), st(0, 500), time.Second, false},
		{"catches up", st(40, 0), st(0, 0), 0, true},
		{"small move", st(300, 0), st(390, 0), time.Minute, false},
		{"more than the minimum", st(300, 0), st(401, 0), 0, true},
		{"under 1% of a large backlog", st(1_000_000, 0), st(1_009_000, 0), time.Minute, false},
		{"over 1% of a large backlog", st(1_000_000, 0), st(1_011_000, 0), 0, true},
	} {
		if got := lagWorthWriting(c.was, c.now, c.age, lagWriteMaxAge); got != c.want {
			t.Errorf("%s: lagWorthWriting = %v, want %v", c.name, got, c.want)
		}
	}
}

// The refresher hands a consumer it cannot read back to the reconciler: one
// deleted behind the operator's back is recreated, and a server that went
// away shows on the sink.
func TestUnreadableConsumerIsReconciled(t *testing.T) {
	ns, srv := withStream(t)
	_, js := srv.JetStream(t)
	mustCreate(t, newSink(ns, srv.ClientURL()))
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonWorkersUnavailable)
	eventually(t, 10*time.Second, func() error {
		_, err := js.Consumer(t.Context(), "EVENTS", consumerName(ns))
		return err
	})

	if err := js.DeleteConsumer(t.Context(), "EVENTS", consumerName(ns)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		_, err := js.Consumer(t.Context(), "EVENTS", consumerName(ns))
		return err
	})

	srv.Shutdown()
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonNATSUnreachable)
	wantCondition(t, ns, "events", jetsinkv1.ConditionReconciling, metav1.ConditionTrue, jetsinkv1.ReasonNATSUnreachable)
	wantEvent(t, ns, jetsinkv1.ReasonNATSUnreachable)
}

// A new sink is converged by one reconcile: the Deployment and Service it
// creates do not wake it again (a fleet of new sinks would otherwise queue
// a second, empty reconcile each), while losing one still does.
func TestNewSinkConvergesInOneReconcile(t *testing.T) {
	ns, srv := withStream(t)
	mustCreate(t, newSink(ns, srv.ClientURL()))
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonWorkersUnavailable)
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

// A bucket deleted under a converged sink shows on the sink although its
// consumer's counters need not move at all (workers retry a failed upload
// in-process and keep the events leased): the refresher hands every
// followed sink back to the reconciler once per destinationRecheckTicks
// intervals, and that reconcile checks the bucket.
func TestBucketLostAfterConvergenceShows(t *testing.T) {
	ns, srv := withStream(t)
	s3 := s3test.Start(t)
	s3.CreateBucket(t, "lake")
	sink := newSink(ns, srv.ClientURL())
	mustCreate(t, withS3(t, sink, s3, s3Keys))
	converge(t, sink)
	key := types.NamespacedName{Namespace: ns, Name: "events"}
	before := reconciles.of(key)

	if err := os.RemoveAll(filepath.Join(s3.Dir, "lake")); err != nil {
		t.Fatal(err)
	}
	// Within a recheck (10 intervals, ±10%) and the reconcile's own time.
	recheck := time.Duration(float64(destinationRecheckTicks*statusRefresh) * (1 + destinationRecheckJitter))
	eventually(t, recheck+10*time.Second, func() error {
		c, err := condition(t, ns, "events", jetsinkv1.ConditionReady)
		if err != nil {
			return err
		}
		if c.Status != metav1.ConditionFalse || c.Reason != jetsinkv1.ReasonBucketNotFound {
			return fmt.Errorf("Ready = %s/%s, want False/%s", c.Status, c.Reason, jetsinkv1.ReasonBucketNotFound)
		}
		return nil
	})
	wantEvent(t, ns, jetsinkv1.ReasonBucketNotFound)
	if n := reconciles.of(key) - before; n < 1 {
		t.Errorf("the sink showed the lost bucket after %d reconciles", n)
	}
}

// sinkMetric reads one per-sink series from the manager's registry.
func sinkMetric(t *testing.T, name string, key types.NamespacedName) (float64, bool) {
	t.Helper()
	for _, m := range gather(t, name) {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["namespace"] == key.Namespace && labels["name"] == key.Name {
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func counterValue(t *testing.T, name string) float64 {
	t.Helper()
	var v float64
	for _, m := range gather(t, name) {
		v += m.GetCounter().GetValue()
	}
	return v
}

func histogramCount(t *testing.T, name string) uint64 {
	t.Helper()
	var n uint64
	for _, m := range gather(t, name) {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

// gather scrapes the manager's registry (what its /metrics serves) for the
// series of one metric. (prometheus/testutil would need a module the
// go.mod does not have for its diffs.)
func gather(t *testing.T, name string) []*dto.Metric {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()
		}
	}
	return nil
}
