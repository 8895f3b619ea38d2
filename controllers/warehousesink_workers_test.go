package controllers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
)

// failedAt is when the test pods' containers terminated.
var failedAt = metav1.NewTime(time.Date(2026, 12, 2, 21, 0, 0, 0, time.UTC))

func terminated(reason string, code int32, at metav1.Time) *corev1.ContainerStateTerminated {
	return &corev1.ContainerStateTerminated{Reason: reason, ExitCode: code, StartedAt: metav1.NewTime(at.Add(-time.Minute)), FinishedAt: at}
}

// crashLooping is a container status as the kubelet writes it while it
// waits to restart a container that failed.
func crashLooping(last *corev1.ContainerStateTerminated, restarts int32) corev1.ContainerStatus {
	return corev1.ContainerStatus{
		Name: "sinkworker", Image: "jetsink:test", RestartCount: restarts,
		State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: corev1.ContainerState{Terminated: last},
	}
}

// running is a container status of a running container, ready or not.
func running(ready bool, last *corev1.ContainerStateTerminated, restarts int32) corev1.ContainerStatus {
	cs := crashLooping(last, restarts)
	cs.Ready = ready
	cs.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: failedAt}}
	return cs
}

func workerPod(name, limit string, statuses ...corev1.ContainerStatus) corev1.Pod {
	c := corev1.Container{Name: "sinkworker", Image: "jetsink:test"}
	if limit != "" {
		c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(limit)}
	}
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "demo"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{c}},
		Status:     corev1.PodStatus{ContainerStatuses: statuses},
	}
}

func TestInspectWorkers(t *testing.T) {
	sink := &jetsinkv1.WarehouseSink{ObjectMeta: metav1.ObjectMeta{Name: "events", Namespace: "demo"}}
	sink.Spec.Batch.MaxBufferedBytes = ptr.To(resource.MustParse("256Mi"))
	later := metav1.NewTime(failedAt.Add(time.Minute))
	oom := terminated("OOMKilled", 137, failedAt)

	for _, tc := range []struct {
		name string
		pods []corev1.Pod
		// last is the pod and reason of lastWorkerFailure ("" for none);
		// down the Ready reason ("" for none).
		last, down string
		// message holds what the down (or else the last) message says.
		message []string
	}{
		{name: "no pods"},
		{name: "healthy", pods: []corev1.Pod{workerPod("a", "1Gi", running(true, nil, 0))}},
		{name: "a drain that exited 0 is no failure",
			pods: []corev1.Pod{workerPod("a", "1Gi", running(true, terminated("Completed", 0, failedAt), 1))}},
		{name: "OOM, crash looping", pods: []corev1.Pod{
			workerPod("a", "1Gi", running(true, nil, 0)),
			workerPod("b", "128Mi", crashLooping(oom, 2)),
		}, last: "b OOMKilled", down: jetsinkv1.ReasonWorkerOOMKilled, message: []string{
			"pod b container sinkworker was OOMKilled (exit code 137) at 2026-12-02T21:00:00Z, restart count 2",
			"memory limit 128Mi, batch.maxBufferedBytes 256Mi",
			"raise spec.resources.limits.memory above batch.maxBufferedBytes plus room for encoding, or lower batch.maxBufferedBytes",
		}},
		{name: "OOM, restarted and not ready yet",
			pods: []corev1.Pod{workerPod("b", "128Mi", running(false, oom, 1))},
			last: "b OOMKilled", down: jetsinkv1.ReasonWorkerOOMKilled},
		{name: "OOM, terminated just now", pods: []corev1.Pod{workerPod("b", "128Mi", corev1.ContainerStatus{
			Name: "sinkworker", State: corev1.ContainerState{Terminated: oom},
		})}, last: "b OOMKilled", down: jetsinkv1.ReasonWorkerOOMKilled},
		{name: "OOM, recovered: shown, not down",
			pods: []corev1.Pod{workerPod("b", "128Mi", running(true, oom, 2))}, last: "b OOMKilled",
			message: []string{"pod b container sinkworker was OOMKilled"}},
		{name: "OOM without a limit is the node's", pods: []corev1.Pod{workerPod("b", "", crashLooping(oom, 1))},
			last: "b OOMKilled", down: jetsinkv1.ReasonWorkerOOMKilled,
			message: []string{"no memory limit, so the node ran out of memory (batch.maxBufferedBytes 256Mi)"}},
		{name: "crash", pods: []corev1.Pod{workerPod("c", "1Gi", crashLooping(terminated("Error", 1, failedAt), 4))},
			last: "c Error", down: jetsinkv1.ReasonWorkerCrashed, message: []string{
				"pod c container sinkworker exited with code 1 (Error) at 2026-12-02T21:00:00Z, restart count 4",
				"kubectl logs c -c sinkworker --previous",
			}},
		{name: "the most recent failure is shown, the one keeping a worker down is the reason", pods: []corev1.Pod{
			workerPod("b", "128Mi", crashLooping(oom, 2)),
			workerPod("c", "1Gi", running(true, terminated("Error", 1, later), 1)),
		}, last: "c Error", down: jetsinkv1.ReasonWorkerOOMKilled, message: []string{"pod b "}},
		{name: "a container that failed again: its current termination", pods: []corev1.Pod{workerPod("b", "128Mi", corev1.ContainerStatus{
			Name: "sinkworker", RestartCount: 3,
			State:                corev1.ContainerState{Terminated: terminated("Error", 2, later)},
			LastTerminationState: corev1.ContainerState{Terminated: oom},
		})}, last: "b Error", down: jetsinkv1.ReasonWorkerCrashed, message: []string{"exited with code 2 (Error)"}},
		{name: "an old failure under a clean exit is shown, not down", pods: []corev1.Pod{workerPod("b", "128Mi", corev1.ContainerStatus{
			Name:                 "sinkworker",
			State:                corev1.ContainerState{Terminated: terminated("Completed", 0, later)},
			LastTerminationState: corev1.ContainerState{Terminated: oom},
		})}, last: "b OOMKilled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := inspectWorkers(sink, tc.pods)
			last := ""
			if h.last != nil {
				last = h.last.Pod + " " + h.last.Reason
			}
			if last != tc.last {
				t.Errorf("lastWorkerFailure %q, want %q (%+v)", last, tc.last, h.last)
			}
			if got := h.downReason(); got != tc.down {
				t.Errorf("down %q, want %q", got, tc.down)
			}
			msg := h.lastMessage
			if h.down != nil {
				msg = h.down.Message
			}
			for _, want := range tc.message {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not say %q", msg, want)
				}
			}
		})
	}
}

// summarize puts a worker that is down in Ready's reason only while the
// Deployment says workers are missing, and into a Deployment's stalled
// rollout.
func TestSummarizeNamesTheFailingWorker(t *testing.T) {
	sink := &jetsinkv1.WarehouseSink{ObjectMeta: metav1.ObjectMeta{Name: "events", Namespace: "demo", Generation: 1}}
	sink.Spec.Replicas = ptr.To[int32](2)
	pods := []corev1.Pod{workerPod("b", "128Mi", crashLooping(terminated("OOMKilled", 137, failedAt), 2))}
	dep := func(available int32, cond ...appsv1.DeploymentCondition) *appsv1.Deployment {
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "events", Generation: 1},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2,
				ReadyReplicas: available, AvailableReplicas: available, Conditions: cond},
		}
	}
	for _, tc := range []struct {
		name          string
		dep           *appsv1.Deployment
		reason, says  string
		stalled       bool
		reconciling   metav1.ConditionStatus
		workersUnread bool
	}{
		{name: "one of two available", dep: dep(1), reason: jetsinkv1.ReasonWorkerOOMKilled,
			says: "1 of 2 workers available: pod b container sinkworker was OOMKilled", reconciling: metav1.ConditionTrue},
		{name: "all available", dep: dep(2), reason: jetsinkv1.ReasonAvailable, reconciling: metav1.ConditionFalse},
		{name: "pods unread", dep: dep(1), reason: jetsinkv1.ReasonWorkersUnavailable, reconciling: metav1.ConditionTrue, workersUnread: true},
		{name: "rollout past its deadline", dep: dep(1, appsv1.DeploymentCondition{
			Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded",
			Message: `ReplicaSet "events-abc" has timed out progressing.`,
		}), reason: jetsinkv1.ReasonProgressDeadlineExceeded, stalled: true, reconciling: metav1.ConditionFalse,
			says: "timed out progressing.; worker pod b keeps failing (WorkerOOMKilled: see status.lastWorkerFailure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := sink.DeepCopy()
			workers := inspectWorkers(s, pods)
			if tc.workersUnread {
				workers = nil
			}
			summarize(s, nil, tc.dep, workers)
			ready := apimeta.FindStatusCondition(s.Status.Conditions, jetsinkv1.ConditionReady)
			if ready.Reason != tc.reason || !strings.Contains(ready.Message, tc.says) {
				t.Errorf("Ready %s %s: %q, want %s saying %q", ready.Status, ready.Reason, ready.Message, tc.reason, tc.says)
			}
			if st := apimeta.IsStatusConditionTrue(s.Status.Conditions, jetsinkv1.ConditionStalled); st != tc.stalled {
				t.Errorf("Stalled %v, want %v", st, tc.stalled)
			}
			if r := apimeta.FindStatusCondition(s.Status.Conditions, jetsinkv1.ConditionReconciling); r.Status != tc.reconciling {
				t.Errorf("Reconciling %s (%s), want %s", r.Status, r.Reason, tc.reconciling)
			}
			if got := s.Status.LastWorkerFailure; tc.workersUnread != (got == nil) {
				t.Errorf("lastWorkerFailure %+v with the pods read: %v", got, !tc.workersUnread)
			}
		})
	}
}

// The predicate lets through what the status shows and nothing the kubelet
// writes besides.
func TestWorkerPodChangedPredicate(t *testing.T) {
	base := workerPod("b", "128Mi", running(true, nil, 0))
	base.Status.Phase = corev1.PodRunning
	base.Status.PodIP = "10.0.0.7"
	base.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	for _, tc := range []struct {
		name string
		edit func(*corev1.Pod)
		want bool
	}{
		{"nothing", func(*corev1.Pod) {}, false},
		{"heartbeat: IPs, conditions' probe times, phase", func(p *corev1.Pod) {
			p.Status.PodIP, p.Status.HostIP = "10.0.0.8", "192.168.0.2"
			p.Status.Conditions[0].LastProbeTime = metav1.Now()
			p.Status.Phase = corev1.PodPending
			p.Annotations = map[string]string{"kubectl.kubernetes.io/note": "x"}
		}, false},
		{"the running container's image ID", func(p *corev1.Pod) { p.Status.ContainerStatuses[0].ImageID = "sha256:ab" }, false},
		{"readiness", func(p *corev1.Pod) { p.Status.ContainerStatuses[0].Ready = false }, true},
		{"restart", func(p *corev1.Pod) { p.Status.ContainerStatuses[0].RestartCount = 1 }, true},
		{"terminated", func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: terminated("OOMKilled", 137, failedAt)}
		}, true},
		{"a new last termination", func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].LastTerminationState.Terminated = terminated("Error", 1, failedAt)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := base.DeepCopy()
			tc.edit(now)
			if got := workerPodChanged.Update(event.UpdateEvent{ObjectOld: &base, ObjectNew: now}); got != tc.want {
				t.Errorf("update passes: %v, want %v", got, tc.want)
			}
		})
	}
	if workerPodChanged.Create(event.CreateEvent{Object: &base}) {
		t.Error("a pod's creation passes")
	}
	if workerPodChanged.Delete(event.DeleteEvent{Object: &base}) {
		t.Error("a healthy pod's deletion passes")
	}
	failed := workerPod("b", "128Mi", running(true, terminated("OOMKilled", 137, failedAt), 1))
	if !workerPodChanged.Delete(event.DeleteEvent{Object: &failed}) {
		t.Error("the deletion of a pod whose failure the sink shows does not pass")
	}
}

// allReplicas asks markAvailable for every replica available.
const allReplicas = -1

// markAvailable stands in for the Deployment controller: every replica
// updated, available of them ready and available (allReplicas: all).
func markAvailable(t *testing.T, ns, name string, available int32) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		d, err := get(t, &appsv1.Deployment{}, ns, name)
		if err != nil {
			return err
		}
		n := *d.Spec.Replicas
		if available == allReplicas {
			available = n
		}
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n,
			UpdatedReplicas: n, ReadyReplicas: available, AvailableReplicas: available}
		return k8s.Status().Update(t.Context(), d)
	})
}

// createWorkerPod creates a pod from the sink's pod template, as its
// ReplicaSet would, with labels (the instance label names the sink) and
// writes its status as the kubelet would.
func createWorkerPod(t *testing.T, dep *appsv1.Deployment, name string, labels map[string]string, statuses ...corev1.ContainerStatus) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: dep.Namespace, Labels: labels},
		Spec:       *dep.Spec.Template.Spec.DeepCopy(),
	}
	mustCreate(t, pod)
	setPodStatus(t, pod, statuses...)
	return pod
}

// setPodStatus writes the pod's container statuses through the status
// subresource, as the kubelet does.
func setPodStatus(t *testing.T, pod *corev1.Pod, statuses ...corev1.ContainerStatus) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		if err := k8s.Get(t.Context(), client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		pod.Status.Phase = corev1.PodRunning
		pod.Status.ContainerStatuses = statuses
		return k8s.Status().Update(t.Context(), pod)
	})
}

// warnings are the Events of the sink with this reason.
func warnings(t *testing.T, ns, reason string) []eventsv1.Event {
	t.Helper()
	var out []eventsv1.Event
	for _, e := range eventsOf(t, ns, reason) {
		if e.Type == corev1.EventTypeWarning {
			out = append(out, e)
		}
	}
	return out
}

// wantOneEventPerFailure checks there are n Warning Events of the reason,
// none of them repeated (a Series is the recorder's count of identical
// Events: one per reconcile would make one).
func wantOneEventPerFailure(t *testing.T, ns, reason string, n int) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		got := warnings(t, ns, reason)
		if len(got) != n {
			return fmt.Errorf("%d %s Events, want %d", len(got), reason, n)
		}
		for _, e := range got {
			if e.Series != nil {
				return fmt.Errorf("%s Event %q repeated %d times: one per reconcile, not per failure", reason, e.Note, e.Series.Count)
			}
		}
		return nil
	})
}

// lastFailure waits until status.lastWorkerFailure passes check; it fails
// the test at once should it name a pod of another sink.
func lastFailure(t *testing.T, ns string, check func(*jetsinkv1.WorkerFailure) error) *jetsinkv1.WorkerFailure {
	t.Helper()
	var got *jetsinkv1.WorkerFailure
	eventually(t, 20*time.Second, func() error {
		sink, err := get(t, &jetsinkv1.WarehouseSink{}, ns, "events")
		if err != nil {
			return err
		}
		got = sink.Status.LastWorkerFailure
		if got != nil && got.Pod == otherSinksPod {
			t.Fatalf("lastWorkerFailure names %s, a pod of another sink", got.Pod)
		}
		return check(got)
	})
	return got
}

const otherSinksPod = "archive-5d8f9-x2v7q"

// TestOOMKilledWorkerIsReported plays the kubelet of a worker whose memory
// limit is below what it buffers: its pod's status says OOMKilled, then
// restarted, then ready. The sink names the pod, the limit and the fix,
// once per failure, and keeps showing the failure after it recovered.
func TestOOMKilledWorkerIsReported(t *testing.T) {
	ns, srv := withStream(t)
	s3 := s3test.Start(t)
	s3.CreateBucket(t, "lake")
	sink := newSink(ns, srv.ClientURL())
	secret := withS3(t, sink, s3, s3Keys)
	sink.Spec.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}
	mustCreate(t, secret)
	mustCreate(t, sink)
	key := client.ObjectKeyFromObject(sink)
	var dep *appsv1.Deployment
	eventually(t, 20*time.Second, func() (err error) {
		dep, err = get(t, &appsv1.Deployment{}, ns, "events")
		return err
	})
	labels := dep.Spec.Template.Labels

	// A worker of another sink in the namespace crashes more recently
	// than any of this sink's.
	other := map[string]string{}
	for k, v := range labels {
		other[k] = v
	}
	other[workload.LabelInstance] = "archive"
	createWorkerPod(t, dep, otherSinksPod, other,
		crashLooping(terminated("Error", 1, metav1.NewTime(failedAt.Add(time.Hour))), 9))

	// One worker runs, the other was OOM-killed twice and waits to be
	// restarted.
	createWorkerPod(t, dep, "events-7c9d4-a1b2c", labels, running(true, nil, 0))
	oom := terminated("OOMKilled", 137, failedAt)
	failing := createWorkerPod(t, dep, "events-7c9d4-d3e4f", labels, crashLooping(oom, 2))
	markAvailable(t, ns, "events", 1)

	var ready *metav1.Condition
	eventually(t, 20*time.Second, func() error {
		ready = wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonWorkerOOMKilled)
		if !strings.HasPrefix(ready.Message, "1 of 2 workers available: ") {
			return fmt.Errorf("Ready message %q, want the Deployment's count first", ready.Message)
		}
		return nil
	})
	for _, want := range []string{"pod events-7c9d4-d3e4f", "OOMKilled", "memory limit 128Mi",
		"batch.maxBufferedBytes 256Mi", "raise spec.resources.limits.memory above batch.maxBufferedBytes"} {
		if !strings.Contains(ready.Message, want) {
			t.Errorf("Ready message %q does not say %q", ready.Message, want)
		}
	}
	wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionFalse, jetsinkv1.ReasonAsExpected)
	lastFailure(t, ns, func(f *jetsinkv1.WorkerFailure) error {
		want := jetsinkv1.WorkerFailure{Pod: "events-7c9d4-d3e4f", Container: "sinkworker", Reason: "OOMKilled",
			ExitCode: 137, FinishedAt: failedAt, Restarts: 2}
		if f == nil || !f.FinishedAt.Equal(&want.FinishedAt) {
			return fmt.Errorf("lastWorkerFailure %+v, want %+v", f, want)
		}
		got := *f
		got.FinishedAt = failedAt // the same instant, decoded in the local zone
		if got != want {
			return fmt.Errorf("lastWorkerFailure %+v, want %+v", f, want)
		}
		return nil
	})
	wantEvent(t, ns, jetsinkv1.ReasonWorkerOOMKilled)

	// Reconciles for other reasons (here, annotations) say nothing new.
	for i := range 3 {
		n := reconciles.of(key)
		patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) {
			s.Annotations = map[string]string{"example.com/touch": fmt.Sprint(i)}
		})
		eventually(t, 10*time.Second, func() error {
			if reconciles.of(key) == n {
				return fmt.Errorf("the annotation did not wake the sink")
			}
			return nil
		})
	}
	wantOneEventPerFailure(t, ns, jetsinkv1.ReasonWorkerOOMKilled, 1)

	// The kubelet's writes that change nothing the status shows do not
	// wake the sink; a restart does.
	time.Sleep(statusRefresh / 2) // let a queued reconcile run before counting
	n := reconciles.of(key)
	for i := range 3 {
		eventually(t, 10*time.Second, func() error {
			if err := k8s.Get(t.Context(), client.ObjectKeyFromObject(failing), failing); err != nil {
				return err
			}
			failing.Status.PodIP = fmt.Sprintf("10.0.0.%d", 10+i)
			failing.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse,
				Reason: "ContainersNotReady", LastProbeTime: metav1.Now()}}
			return k8s.Status().Update(t.Context(), failing)
		})
	}
	time.Sleep(2 * statusRefresh)
	if got := reconciles.of(key) - n; got != 0 {
		t.Errorf("%d reconciles for pod status writes that change nothing the sink shows, want 0", got)
	}

	// Restarted, and OOM-killed once more.
	again := terminated("OOMKilled", 137, metav1.NewTime(failedAt.Add(2*time.Minute)))
	setPodStatus(t, failing, running(false, oom, 3))
	setPodStatus(t, failing, crashLooping(again, 3))
	lastFailure(t, ns, func(f *jetsinkv1.WorkerFailure) error {
		if f == nil || !f.FinishedAt.Equal(&again.FinishedAt) || f.Restarts != 3 {
			return fmt.Errorf("lastWorkerFailure %+v, want the second OOM kill, restart count 3", f)
		}
		return nil
	})
	if got := reconciles.of(key) - n; got < 1 {
		t.Errorf("the restart did not wake the sink")
	}
	wantOneEventPerFailure(t, ns, jetsinkv1.ReasonWorkerOOMKilled, 2)

	// The limit was raised by hand: the worker runs and is ready. Ready
	// again, and the failure still shows.
	setPodStatus(t, failing, running(true, again, 4))
	markRolledOut(t, ns, "events")
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionTrue, jetsinkv1.ReasonAvailable)
	lastFailure(t, ns, func(f *jetsinkv1.WorkerFailure) error {
		if f == nil || f.Pod != "events-7c9d4-d3e4f" || f.Reason != "OOMKilled" || f.Restarts != 4 {
			return fmt.Errorf("lastWorkerFailure %+v, want the OOM kill kept after the recovery", f)
		}
		return nil
	})
	wantEvent(t, ns, "Recovered")
	wantOneEventPerFailure(t, ns, jetsinkv1.ReasonWorkerOOMKilled, 2)

	// A rollout replaced the pod: no current pod failed.
	if err := k8s.Delete(t.Context(), failing); err != nil {
		t.Fatal(err)
	}
	lastFailure(t, ns, func(f *jetsinkv1.WorkerFailure) error {
		if f != nil {
			return fmt.Errorf("lastWorkerFailure %+v after its pod was deleted, want none", f)
		}
		return nil
	})
	if n := len(warnings(t, ns, jetsinkv1.ReasonWorkerCrashed)); n != 0 {
		t.Errorf("%d WorkerCrashed Events: the other sink's crash is not this one's", n)
	}
}

// A worker that exits with an error is WorkerCrashed, with its exit code.
func TestCrashedWorkerIsReported(t *testing.T) {
	ns, srv := withStream(t)
	sink, _ := sinkOnS3(t, ns, srv, s3Keys)
	var dep *appsv1.Deployment
	eventually(t, 20*time.Second, func() (err error) {
		dep, err = get(t, &appsv1.Deployment{}, ns, "events")
		return err
	})
	createWorkerPod(t, dep, "events-7c9d4-g5h6i", dep.Spec.Template.Labels,
		crashLooping(terminated("Error", 1, failedAt), 5))
	markAvailable(t, ns, "events", 1)
	ready := wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonWorkerCrashed)
	if want := "pod events-7c9d4-g5h6i container sinkworker exited with code 1 (Error)"; !strings.Contains(ready.Message, want) {
		t.Errorf("Ready message %q does not say %q", ready.Message, want)
	}
	wantOneEventPerFailure(t, ns, jetsinkv1.ReasonWorkerCrashed, 1)
	got, _ := get(t, &jetsinkv1.WarehouseSink{}, ns, sink.Name)
	if f := got.Status.LastWorkerFailure; f == nil || f.ExitCode != 1 || f.Reason != "Error" || f.Restarts != 5 {
		t.Errorf("lastWorkerFailure %+v", f)
	}
}
