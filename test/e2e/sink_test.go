package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/hack/localstack/stack"
)

// A sink with 2 replicas runs 2 worker processes; every published event
// lands in the bucket exactly once, in its partition; kubectl shows the sink
// Ready with no lag; the metrics Service's endpoints count the same rows.
func TestEveryEventWrittenOnce(t *testing.T) {
	e := newEnv(t, "once")
	e.create(e.sink("events", 2))
	e.waitReady("events", 2)

	const n = 6000
	p := &publisher{e: e, prefix: "once"}
	p.publish(n)
	if dupes := e.waitAllWritten(p, 60*time.Second); dupes != 0 {
		t.Errorf("%d duplicate rows without any failure; want every event exactly once", dupes)
	}
	counts, files := e.readBucket()
	if len(counts) != n {
		t.Errorf("bucket holds %d distinct events, want %d", len(counts), n)
	}
	t.Logf("%d events in %d files", n, files)

	eventually(t, 20*time.Second, "kubectl get sinks: Available, lag 0", func() (bool, string) {
		out, err := kubectl(t, "get", "sinks", "-n", e.ns, "--no-headers",
			"-o", "custom-columns=READY:.status.readyReplicas,LAG:.status.consumer.lag,STATUS:.status.conditions[?(@.type==\"Ready\")].status")
		return err == nil && strings.Fields(out) != nil && strings.Join(strings.Fields(out), " ") == "2 0 True", out
	})
	out, _ := kubectl(t, "get", "sinks", "-n", e.ns)
	t.Logf("kubectl get sinks:\n%s", out)

	eventually(t, 20*time.Second, "the metrics endpoints to count every row", func() (bool, string) {
		m, eps := e.endpointMetrics("events")
		return eps == 2 && m["jetsink_file_rows_total"] == n && m["jetsink_events_acked_total"] == n &&
				m["jetsink_files_written_total"] == float64(files),
			fmt.Sprintf("endpoints %d, rows %v, acked %v, files %v (bucket %d)", eps, m["jetsink_file_rows_total"],
				m["jetsink_events_acked_total"], m["jetsink_files_written_total"], files)
	})
}

// Scaling the sink (the /scale subresource, then a patch) while events flow:
// the processes follow, the drained workers exit cleanly within their grace
// period, and no event is lost.
func TestScaleWhileEventsFlow(t *testing.T) {
	e := newEnv(t, "scale")
	e.create(e.sink("events", 2))
	e.waitReady("events", 2)
	key := e.key("events")

	p := &publisher{e: e, prefix: "scale"}
	stop := p.flow()
	defer stop()

	time.Sleep(2 * time.Second)
	if out, err := kubectl(t, "scale", "-n", e.ns, "warehousesink/events", "--replicas=4"); err != nil {
		t.Fatal(err)
	} else {
		t.Log(strings.TrimSpace(out))
	}
	e.waitReady("events", 4)
	time.Sleep(2 * time.Second)
	before := len(st.PodEvents())
	if _, err := kubectl(t, "patch", "-n", e.ns, "warehousesink/events", "--type=merge", "-p", `{"spec":{"replicas":1}}`); err != nil {
		t.Fatal(err)
	}
	e.waitReady("events", 1)
	time.Sleep(2 * time.Second)
	stop()

	// The three drained workers exited by themselves, with status 0, as
	// the kubelet reported their containers.
	var exits []stack.PodEvent
	for _, ev := range podEvents(key, before) {
		switch ev.Type {
		case "Exited":
			exits = append(exits, ev)
		case "Killed":
			t.Errorf("pod %s was killed: %s", ev.Pod, ev.Detail)
		}
	}
	if len(exits) != 3 {
		t.Errorf("scale-down 4→1: %d containers exited, want 3: %+v", len(exits), exits)
	}
	dupes := e.waitAllWritten(p, 60*time.Second)
	t.Logf("%d events published while scaling 2→4→1; none lost, %d duplicate rows", p.published(), dupes)
	if dupes != 0 {
		t.Errorf("%d duplicate rows: a clean drain should write every event once", dupes)
	}
}

// kill -9 of a worker holding open batches, twice: once through the
// container runtime (the kubelet restarts the container) and once with
// `kubectl delete pod --grace-period=0 --force` (the ReplicaSet makes a new
// pod). The events they held are redelivered after AckWait and written by
// the others or the replacements; nothing is lost and the duplicates are
// bounded by what the victims held.
func TestKillNineLosesNothing(t *testing.T) {
	e := newEnv(t, "kill")
	s := e.sink("events", 2)
	// Long batches so the killed worker holds events; a short AckWait so
	// they come back quickly.
	s.Spec.Batch.MaxAge = &metav1.Duration{Duration: 5 * time.Second}
	s.Spec.Batch.MaxEvents = 100000
	s.Spec.Source.AckWait = &metav1.Duration{Duration: 8 * time.Second}
	e.create(s)
	e.waitReady("events", 2)

	p := &publisher{e: e, prefix: "kill"}
	var inFlight float64
	p.publish(4000)
	victim, held := e.holdingWorker("events")
	if err := st.KillContainer(t.Context(), victim); err != nil {
		t.Fatal(err)
	}
	inFlight += held
	t.Logf("SIGKILLed the container of %s (through containerd) holding %.0f unwritten events", victim.Name, held)
	// The kubelet restarts it, as it restarts any container that dies.
	eventually(t, 30*time.Second, "the killed container restarted and ready", func() (bool, string) {
		for _, pod := range e.pods("events") {
			if pod.Name == victim.Name {
				return pod.Restarts >= 1 && pod.Ready, fmt.Sprintf("%+v", pod)
			}
		}
		return false, "pod gone"
	})

	p.publish(4000)
	victim, held = e.holdingWorker("events")
	if out, err := kubectl(t, "delete", "pod", "-n", e.ns, victim.Name, "--grace-period=0", "--force"); err != nil {
		t.Fatal(err)
	} else {
		t.Log(strings.TrimSpace(out))
	}
	inFlight += held
	t.Logf("force-deleted %s holding %.0f unwritten events", victim.Name, held)
	p.publish(2000)

	dupes := e.waitAllWritten(p, 90*time.Second)
	t.Logf("%d events, none lost; %d duplicate rows (the killed workers held %.0f)", p.published(), dupes, inFlight)
	if float64(dupes) > inFlight {
		t.Errorf("%d duplicates, more than the %.0f events in flight at the kills", dupes, inFlight)
	}
	e.waitReady("events", 2)
}

// holdingWorker waits for a worker pod that holds events it has not
// written, read from its own metrics.
func (e *env) holdingWorker(name string) (victim stack.Pod, held float64) {
	e.t.Helper()
	eventually(e.t, 15*time.Second, "a worker holding unwritten events", func() (bool, string) {
		for _, pod := range e.pods(name) {
			if !pod.Ready || pod.Terminating {
				continue
			}
			m, err := stack.Scrape(e.t.Context(), pod.MetricsURL())
			if err != nil {
				continue
			}
			h := m["jetsink_events_received_total"] - m["jetsink_events_acked_total"] - m["jetsink_events_dead_lettered_total"]
			if h > 0 {
				victim, held = pod, h
				return true, ""
			}
		}
		return false, "no worker holds events"
	})
	return victim, held
}

// Changing shutdownTimeout rolls the Deployment; the new pods carry the new
// grace period, the old ones drain under the old one, and the sink is Ready
// at the new generation.
func TestShutdownTimeoutChangeRolls(t *testing.T) {
	e := newEnv(t, "roll")
	e.create(e.sink("events", 2))
	e.waitReady("events", 2)
	key := e.key("events")
	oldPods := e.pods("events")
	wantOld := 5*time.Second + 15*time.Second // shutdownTimeout + the operator's margin
	for _, pod := range oldPods {
		if pod.GracePeriod != wantOld {
			t.Errorf("pod %s grace %s, want %s", pod.Name, pod.GracePeriod, wantOld)
		}
	}
	p := &publisher{e: e, prefix: "roll"}
	p.publish(2000)

	before := len(st.PodEvents())
	if _, err := kubectl(t, "patch", "-n", e.ns, "warehousesink/events", "--type=merge", "-p", `{"spec":{"shutdownTimeout":"9s"}}`); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the Deployment's new grace period", func() (bool, string) {
		d := &appsv1.Deployment{}
		if err := st.Client.Get(t.Context(), key, d); err != nil {
			return false, err.Error()
		}
		g := ptr.Deref(d.Spec.Template.Spec.TerminationGracePeriodSeconds, 0)
		return g == 24, fmt.Sprintf("terminationGracePeriodSeconds %d", g)
	})
	e.waitReady("events", 2)
	p.publish(2000)
	newPods := e.pods("events")
	for _, pod := range newPods {
		if pod.GracePeriod != 24*time.Second {
			t.Errorf("new pod %s grace %s, want 24s", pod.Name, pod.GracePeriod)
		}
		for _, o := range oldPods {
			if o.Name == pod.Name || o.TemplateHash == pod.TemplateHash {
				t.Errorf("pod %s survived the roll", pod.Name)
			}
		}
	}
	var terms []string
	for _, ev := range podEvents(key, before) {
		switch ev.Type {
		case "Terminating":
			terms = append(terms, ev.Pod+": "+ev.Detail)
		case "Killed":
			t.Errorf("pod %s killed during the roll: %s", ev.Pod, ev.Detail)
		}
	}
	if len(terms) != 2 {
		t.Errorf("roll terminated %d old pods, want 2: %v", len(terms), terms)
	}
	for _, s := range terms {
		if !strings.Contains(s, "grace period 20s") {
			t.Errorf("old pod not given its own grace period: %s", s)
		}
	}
	if dupes := e.waitAllWritten(p, 60*time.Second); dupes != 0 {
		t.Errorf("%d duplicate rows across a clean roll", dupes)
	}

	// A new pod stopped now gets the new grace period.
	before = len(st.PodEvents())
	if _, err := kubectl(t, "scale", "-n", e.ns, "warehousesink/events", "--replicas=1"); err != nil {
		t.Fatal(err)
	}
	e.waitReady("events", 1)
	terms = nil
	for _, ev := range podEvents(key, before) {
		if ev.Type == "Terminating" {
			terms = append(terms, ev.Detail)
		}
	}
	if len(terms) != 1 || !strings.Contains(terms[0], "grace period 24s") {
		t.Errorf("scale-down after the roll: %v, want one pod terminated with grace period 24s", terms)
	}
}

// Deleting a sink drains and stops its workers, keeps its consumer (the
// default Retain policy) and leaves the bucket as it was.
func TestDeleteSinkRetainsConsumerAndBucket(t *testing.T) {
	e := newEnv(t, "delete")
	s := e.sink("events", 2)
	e.create(s)
	e.waitReady("events", 2)
	key := e.key("events")
	p := &publisher{e: e, prefix: "delete"}
	p.publish(3000)
	e.waitAllWritten(p, 60*time.Second)
	time.Sleep(time.Second) // let the last ACKs land before the sink goes
	keysBefore := e.keys()

	before := len(st.PodEvents())
	if _, err := kubectl(t, "delete", "-n", e.ns, "warehousesink/events", "--wait=true"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "every worker stopped", func() (bool, string) {
		pods := e.pods("events")
		return len(pods) == 0, fmt.Sprintf("%+v", pods)
	})
	var exits []string
	for _, ev := range podEvents(key, before) {
		if ev.Type == "Exited" || ev.Type == "Killed" {
			exits = append(exits, ev.Type+" "+ev.Detail)
		}
	}
	if len(exits) != 2 {
		t.Errorf("%d worker exits, want 2: %v", len(exits), exits)
	}
	for _, x := range exits {
		if !strings.HasPrefix(x, "Exited exit code 0") {
			t.Errorf("worker did not drain cleanly: %s", x)
		}
	}
	info := e.consumerInfo("events")
	if info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("retained consumer has pending %d, ack pending %d; want both 0", info.NumPending, info.NumAckPending)
	}
	if keysAfter := e.keys(); !slices.Equal(keysAfter, keysBefore) {
		t.Errorf("the bucket changed with the delete:\nbefore %v\nafter  %v", keysBefore, keysAfter)
	}
}

// An invalid sink is refused by the API server with a message naming the
// field; a sink with wrong S3 credentials is Degraded, saying so, and ACKs
// nothing.
func TestBadInput(t *testing.T) {
	e := newEnv(t, "bad")
	for _, tc := range []struct {
		name, spec string
		want       []string // in kubectl's error
	}{
		{"unknown compression (schema enum)", "parquet: {compression: lz4}", []string{"spec.parquet.compression", "lz4"}},
		{"ackWait not longer than maxAge (CEL rule)", "source: {url: nats://x, stream: S, ackWait: 10s}\n  batch: {maxAge: 60s}",
			[]string{"spec.source.ackWait", "must be longer than batch.maxAge"}},
		{"shutdownTimeout out of range (CEL rule)", "shutdownTimeout: 2h", []string{"shutdownTimeout"}},
	} {
		t.Run("kubectl apply refuses "+tc.name, func(t *testing.T) {
			spec := tc.spec
			if !strings.Contains(spec, "source:") {
				spec += "\n  source: {url: nats://x, stream: S}"
			}
			manifest := fmt.Sprintf("apiVersion: jetsink.dev/v1alpha1\nkind: WarehouseSink\nmetadata: {name: invalid, namespace: %s}\nspec:\n  destination: {bucket: lake}\n  %s\n", e.ns, spec)
			out, err := st.Kubectl(t.Context(), strings.NewReader(manifest), "apply", "-f", "-")
			if err == nil {
				t.Fatalf("kubectl apply accepted an invalid sink:\n%s\n%s", manifest, out)
			}
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("kubectl apply's error does not say %q:\n%s", want, out)
				}
			}
			t.Logf("refused:\n%s", out)
		})
	}
	t.Run("wrong S3 credentials: not Ready, nothing ACKed", func(t *testing.T) {
		if err := st.Client.Create(t.Context(), stack.S3Secret(e.ns, "wrong-s3", stack.S3AccessKey, "not-the-secret")); err != nil {
			t.Fatal(err)
		}
		s := e.sink("wrongcreds", 1)
		s.Spec.Destination.CredentialsSecretRef = &corev1.LocalObjectReference{Name: "wrong-s3"}
		e.create(s)
		p := &publisher{e: e, prefix: "bad"}
		p.publish(500)
		eventually(t, 30*time.Second, "a Ready=False condition that names the S3 credentials", func() (bool, string) {
			got := e.getSink("wrongcreds")
			c := apimeta.FindStatusCondition(got.Status.Conditions, jetsinkv1.ConditionReady)
			if c == nil {
				return false, "no Ready condition"
			}
			msg := strings.ToLower(c.Message)
			return c.Status == metav1.ConditionFalse && strings.Contains(msg, "s3") &&
					(strings.Contains(msg, "credential") || strings.Contains(msg, "access denied") || strings.Contains(msg, "signature")),
				fmt.Sprintf("%s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
		})
		c := apimeta.FindStatusCondition(e.getSink("wrongcreds").Status.Conditions, jetsinkv1.ConditionReady)
		t.Logf("Ready=%s %s: %s", c.Status, c.Reason, c.Message)
		// Give any worker time to cut and try a batch (maxAge 2s) before
		// checking that nothing was ACKed or written.
		time.Sleep(4 * time.Second)
		live, _ := e.running("wrongcreds")
		t.Logf("%d worker containers running for the degraded sink", live)
		info := e.consumerInfo("wrongcreds")
		if info.AckFloor.Stream != 0 {
			t.Errorf("consumer ACK floor is at stream sequence %d: something was ACKed", info.AckFloor.Stream)
		}
		if _, files := e.readBucket(); files != 0 {
			t.Errorf("%d files written with wrong credentials", files)
		}
	})
}
