package controllers

import (
	"context"
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

// problem is something that stops a sink and that its owner must fix: it
// becomes the Degraded condition's reason and message, and an Event.
// Transient problems (a server down) are retried with backoff; the others
// wait for the object that fixes them (a Secret) to change.
type problem struct {
	Reason    string
	Message   string
	transient bool
}

func (p *problem) Error() string { return p.Reason + ": " + p.Message }

// setCondition sets a condition at the sink's current generation.
func setCondition(sink *jetsinkv1.WarehouseSink, typ string, status metav1.ConditionStatus, reason, message string) {
	apimeta.SetStatusCondition(&sink.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: message,
		ObservedGeneration: sink.Generation,
	})
}

// markDegraded records p on the sink: Degraded with p's reason, and Ready
// False for the same reason. Progressing is left as it was.
func markDegraded(sink *jetsinkv1.WarehouseSink, p *problem) {
	setCondition(sink, jetsinkv1.ConditionDegraded, metav1.ConditionTrue, p.Reason, p.Message)
	setCondition(sink, jetsinkv1.ConditionReady, metav1.ConditionFalse, p.Reason, p.Message)
}

// observeWorkers derives the status from the live Deployment and the
// consumer's counters: replicas, selector, the rollout and readiness.
func observeWorkers(sink *jetsinkv1.WarehouseSink, dep *appsv1.Deployment) {
	desired := ptr.Deref(dep.Spec.Replicas, 1)
	st := dep.Status
	sink.Status.Replicas = st.Replicas
	sink.Status.ReadyReplicas = st.ReadyReplicas
	sink.Status.Selector = labels.SelectorFromSet(workload.SelectorLabels(sink)).String()

	// Rolled out: the Deployment controller saw the current template and
	// every pod runs it (no old pod is still draining).
	rolledOut := st.ObservedGeneration >= dep.Generation &&
		st.UpdatedReplicas == desired && st.Replicas == desired && st.AvailableReplicas >= desired
	if rolledOut {
		sink.Status.ObservedGeneration = sink.Generation
		setCondition(sink, jetsinkv1.ConditionProgressing, metav1.ConditionFalse, jetsinkv1.ReasonRolledOut,
			fmt.Sprintf("Deployment %s runs generation %d with %d replicas", dep.Name, sink.Generation, desired))
	} else {
		setCondition(sink, jetsinkv1.ConditionProgressing, metav1.ConditionTrue, jetsinkv1.ReasonRollingOut,
			fmt.Sprintf("Deployment %s: %d of %d replicas updated, %d available", dep.Name, st.UpdatedReplicas, desired, st.AvailableReplicas))
	}
	setCondition(sink, jetsinkv1.ConditionDegraded, metav1.ConditionFalse, jetsinkv1.ReasonAsExpected, "")

	switch {
	case desired == 0:
		setCondition(sink, jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonScaledToZero,
			"spec.replicas is 0: no worker consumes")
	case st.AvailableReplicas >= desired && rolledOut:
		setCondition(sink, jetsinkv1.ConditionReady, metav1.ConditionTrue, jetsinkv1.ReasonAvailable,
			fmt.Sprintf("%d of %d workers available, consumer present", st.AvailableReplicas, desired))
	default:
		setCondition(sink, jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonWorkersUnavailable,
			fmt.Sprintf("%d of %d workers available", st.AvailableReplicas, desired))
	}
}

// patchStatus writes the status once, at the end of a reconcile, and only
// when it changed; it records an Event when the Degraded condition moves.
func (r *WarehouseSinkReconciler) patchStatus(ctx context.Context, before, sink *jetsinkv1.WarehouseSink) error {
	r.recordTransition(before, sink)
	if equality.Semantic.DeepEqual(before.Status, sink.Status) {
		return nil
	}
	return client.IgnoreNotFound(r.Status().Patch(ctx, sink, client.MergeFrom(before)))
}

// recordTransition emits an Event when the sink becomes degraded, changes
// why, or recovers — on state changes, not on every loop.
func (r *WarehouseSinkReconciler) recordTransition(before, sink *jetsinkv1.WarehouseSink) {
	was := apimeta.FindStatusCondition(before.Status.Conditions, jetsinkv1.ConditionDegraded)
	now := apimeta.FindStatusCondition(sink.Status.Conditions, jetsinkv1.ConditionDegraded)
	if now == nil {
		return
	}
	wasDegraded := was != nil && was.Status == metav1.ConditionTrue
	switch {
	case now.Status == metav1.ConditionTrue && (!wasDegraded || was.Reason != now.Reason || was.Message != now.Message):
		r.Recorder.Eventf(sink, nil, corev1.EventTypeWarning, now.Reason, "Reconcile", "%s", now.Message)
	case now.Status == metav1.ConditionFalse && wasDegraded:
		r.Recorder.Eventf(sink, nil, corev1.EventTypeNormal, "Recovered", "Reconcile", "%s no longer applies", was.Reason)
	}
}
