package controllers

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
)

// problem is something that stops a sink. Its reason and message become the
// conditions' and an Event's.
//
// A stalled problem is one only the sink's owner can fix (a missing Secret,
// a consumer owned by someone else, refused S3 keys): the sink reads as
// Stalled, which kstatus reports as Failed. The others (a server that does
// not answer) may pass by themselves: the sink reads as Reconciling while
// the operator retries with backoff.
type problem struct {
	Reason  string
	Message string
	stalled bool
}

func (p *problem) Error() string { return p.Reason + ": " + p.Message }

// stalled and retrying build the two kinds of problem.
func stalled(reason, format string, args ...any) *problem {
	return &problem{Reason: reason, Message: fmt.Sprintf(format, args...), stalled: true}
}

func retrying(reason, format string, args ...any) *problem {
	return &problem{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func isProblem(err error) bool {
	var p *problem
	return errors.As(err, &p)
}

// setCondition sets a condition at the sink's current generation. Its
// lastTransitionTime moves only when its status does.
func setCondition(sink *jetsinkv1.WarehouseSink, typ string, status metav1.ConditionStatus, reason, message string) {
	apimeta.SetStatusCondition(&sink.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: message,
		ObservedGeneration: sink.Generation,
	})
}

// summarize sets status.observedGeneration, status.lastWorkerFailure and
// the three conditions from what one reconcile found: p, the problem that
// stopped it (nil when none), dep, the workers' live Deployment (nil when
// the reconcile stopped before it), and workers, what their pods say (nil
// when they could not be read). It is the only place conditions are set,
// once per reconcile, so a condition that holds across retries keeps its
// lastTransitionTime.
func summarize(sink *jetsinkv1.WarehouseSink, p *problem, dep *appsv1.Deployment, workers *workerHealth) {
	sink.Status.ObservedGeneration = sink.Generation
	for _, old := range retiredConditions {
		apimeta.RemoveStatusCondition(&sink.Status.Conditions, old)
	}
	if workers != nil {
		sink.Status.LastWorkerFailure = workers.last
	}
	if dep != nil {
		sink.Status.Replicas = dep.Status.Replicas
		sink.Status.ReadyReplicas = dep.Status.ReadyReplicas
		sink.Status.Selector = labels.SelectorFromSet(workload.SelectorLabels(sink)).String()
		if p == nil {
			p = progressDeadlineExceeded(dep, workers)
		}
	}
	if p != nil {
		if p.stalled {
			setCondition(sink, jetsinkv1.ConditionStalled, metav1.ConditionTrue, p.Reason, p.Message)
			setCondition(sink, jetsinkv1.ConditionReconciling, metav1.ConditionFalse, p.Reason, "waiting for the sink's owner to fix it")
		} else {
			setCondition(sink, jetsinkv1.ConditionStalled, metav1.ConditionFalse, jetsinkv1.ReasonAsExpected, "")
			setCondition(sink, jetsinkv1.ConditionReconciling, metav1.ConditionTrue, p.Reason, "retrying: "+p.Message)
		}
		setCondition(sink, jetsinkv1.ConditionReady, metav1.ConditionFalse, p.Reason, p.Message)
		return
	}
	setCondition(sink, jetsinkv1.ConditionStalled, metav1.ConditionFalse, jetsinkv1.ReasonAsExpected, "")

	desired := ptr.Deref(dep.Spec.Replicas, 1)
	st := dep.Status
	// Rolled out: the Deployment controller saw the current template and
	// every pod runs it (no old pod is still draining).
	rolledOut := st.ObservedGeneration >= dep.Generation &&
		st.UpdatedReplicas == desired && st.Replicas == desired && st.AvailableReplicas >= desired
	if rolledOut {
		setCondition(sink, jetsinkv1.ConditionReconciling, metav1.ConditionFalse, jetsinkv1.ReasonRolledOut,
			fmt.Sprintf("Deployment %s runs generation %d with %d replicas", dep.Name, sink.Generation, desired))
	} else {
		setCondition(sink, jetsinkv1.ConditionReconciling, metav1.ConditionTrue, jetsinkv1.ReasonRollingOut,
			fmt.Sprintf("Deployment %s: %d of %d replicas updated, %d available", dep.Name, st.UpdatedReplicas, desired, st.AvailableReplicas))
	}
	switch {
	case sink.Spec.Suspend:
		setCondition(sink, jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonSuspended,
			"spec.suspend is true: no worker consumes; the consumer keeps its position")
	case desired == 0:
		setCondition(sink, jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonScaledToZero,
			"spec.replicas is 0: no worker consumes")
	case rolledOut:
		setCondition(sink, jetsinkv1.ConditionReady, metav1.ConditionTrue, jetsinkv1.ReasonAvailable,
			fmt.Sprintf("%d of %d workers available, consumer present", st.AvailableReplicas, desired))
	case workers.downReason() != "":
		// Not a problem that stops the reconcile: the Deployment is as
		// it should be and the kubelet restarts the container; each
		// change of the pods wakes the sink again.
		setCondition(sink, jetsinkv1.ConditionReady, metav1.ConditionFalse, workers.down.Reason,
			fmt.Sprintf("%d of %d workers available: %s", st.AvailableReplicas, desired, workers.down.Message))
	default:
		setCondition(sink, jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonWorkersUnavailable,
			fmt.Sprintf("%d of %d workers available", st.AvailableReplicas, desired))
	}
}

// progressDeadlineExceeded is the Deployment controller's verdict that the
// rollout will not finish by itself (pods that never become ready: a bad
// image, a crash loop, no room on the nodes), as a stalled problem. A
// worker that keeps failing is named: it is the likely reason.
func progressDeadlineExceeded(dep *appsv1.Deployment, workers *workerHealth) *problem {
	c := deploymentCondition(dep, appsv1.DeploymentProgressing)
	if c == nil || c.Status != corev1.ConditionFalse || c.Reason != "ProgressDeadlineExceeded" {
		return nil
	}
	if workers.downReason() != "" {
		// Without the restart count or the time, so the message (and its
		// Event) does not change with each restart.
		return stalled(jetsinkv1.ReasonProgressDeadlineExceeded,
			"Deployment %s made no progress within its deadline: %s; worker pod %s keeps failing (%s: see status.lastWorkerFailure and the sink's Events)",
			dep.Name, c.Message, workers.downPod, workers.down.Reason)
	}
	return stalled(jetsinkv1.ReasonProgressDeadlineExceeded,
		"Deployment %s made no progress within its deadline: %s (see `kubectl describe deployment %s` and its pods' events)",
		dep.Name, c.Message, dep.Name)
}

func deploymentCondition(dep *appsv1.Deployment, typ appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range dep.Status.Conditions {
		if dep.Status.Conditions[i].Type == typ {
			return &dep.Status.Conditions[i]
		}
	}
	return nil
}

// patchStatus writes the status once, at the end of a reconcile, and only
// when it changed; it records an Event when the Ready condition's reason
// moves to a problem or back, and one for each new worker failure.
//
// The patch carries the resourceVersion the conditions were computed from:
// a status the cache had not caught up with (the lag refresher's, a
// previous reconcile's) is a conflict and a quiet retry, never a second
// flip with a new lastTransitionTime. The Events follow the written status.
func (r *WarehouseSinkReconciler) patchStatus(ctx context.Context, before, sink *jetsinkv1.WarehouseSink, workers *workerHealth) error {
	if equality.Semantic.DeepEqual(before.Status, sink.Status) {
		return nil
	}
	if err := r.Status().Patch(ctx, sink, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return client.IgnoreNotFound(err)
	}
	r.recordTransition(before, sink)
	r.recordWorkerFailure(before, sink, workers)
	return nil
}

// retiredConditions are condition types earlier versions set, removed so
// an upgraded sink never shows a stale Degraded=True beside Ready=True.
var retiredConditions = []string{"Progressing", "Degraded"}

// healthyReasons are the Ready reasons that are no problem: a sink on its
// way (rolling out), at rest on purpose, or ready.
var healthyReasons = map[string]bool{
	jetsinkv1.ReasonAvailable: true, jetsinkv1.ReasonWorkersUnavailable: true,
	jetsinkv1.ReasonSuspended: true, jetsinkv1.ReasonScaledToZero: true,
}

// recordTransition emits a Warning Event when the sink meets a problem or
// the problem changes, and a Normal one when it recovers: on state changes,
// not on every retry.
func (r *WarehouseSinkReconciler) recordTransition(before, sink *jetsinkv1.WarehouseSink) {
	was := apimeta.FindStatusCondition(before.Status.Conditions, jetsinkv1.ConditionReady)
	now := apimeta.FindStatusCondition(sink.Status.Conditions, jetsinkv1.ConditionReady)
	if now == nil {
		return
	}
	wasProblem := was != nil && !healthyReasons[was.Reason]
	switch {
	case workerReasons[now.Reason]:
		// recordWorkerFailure says it, once per failure: the message
		// changes with every restart.
	case !healthyReasons[now.Reason] && (!wasProblem || was.Reason != now.Reason || was.Message != now.Message):
		r.Recorder.Eventf(sink, nil, corev1.EventTypeWarning, now.Reason, "Reconcile", "%s", now.Message)
	case healthyReasons[now.Reason] && wasProblem:
		r.Recorder.Eventf(sink, nil, corev1.EventTypeNormal, "Recovered", "Reconcile", "%s no longer applies", was.Reason)
	}
}

// workerReasons are the Ready reasons of a worker that keeps failing.
var workerReasons = map[string]bool{jetsinkv1.ReasonWorkerOOMKilled: true, jetsinkv1.ReasonWorkerCrashed: true}

// recordWorkerFailure emits a Warning Event when status.lastWorkerFailure
// shows a failure it did not show before: once per termination, not per
// reconcile, and whether or not the workers are available again by now (a
// container restarted before the Deployment noticed is a failure all the
// same). A failure older than the one shown (the pod of the newer one was
// deleted) is no news.
func (r *WarehouseSinkReconciler) recordWorkerFailure(before, sink *jetsinkv1.WarehouseSink, workers *workerHealth) {
	now, was := sink.Status.LastWorkerFailure, before.Status.LastWorkerFailure
	if workers == nil || now == nil || (was != nil && (sameFailure(was, now) || now.FinishedAt.Before(&was.FinishedAt))) {
		return
	}
	r.Recorder.Eventf(sink, nil, corev1.EventTypeWarning, failureReason(now), "Reconcile", "%s", workers.lastMessage)
}
