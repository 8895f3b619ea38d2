package controllers

import (
	"context"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
)

// secretRefIndex indexes sinks by the names of the Secrets they reference,
// so a Secret's change wakes exactly the sinks that use it.
const secretRefIndex = ".spec.secretRefs"

// SetupWithManager registers the controller: sinks (on spec changes), the
// Deployments, Services and PodDisruptionBudgets they own, their worker
// pods (when a container fails, restarts or changes readiness), the Secrets
// they reference, and the sinks the lag refresher (run by the manager too)
// sends back: those it can no longer follow, and each one every ten
// intervals to recheck its destination.
func (r *WarehouseSinkReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return r.setupWithManager(mgr, r)
}

// setupWithManager registers rec, which is r or, in tests, r wrapped.
func (r *WarehouseSinkReconciler) setupWithManager(mgr ctrl.Manager, rec reconcile.Reconciler) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &jetsinkv1.WarehouseSink{}, secretRefIndex,
		func(o client.Object) []string { return secretRefs(o.(*jetsinkv1.WarehouseSink)) }); err != nil {
		return err
	}
	b := ctrl.NewControllerManagedBy(mgr).
		// Status changes (the refresher's lag patches included) do not
		// pass these predicates: a sink is reconciled when its spec or
		// annotations change, not when its status does.
		For(&jetsinkv1.WarehouseSink{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		// A child's creation is the reconcile's own doing and it saw the
		// result, so only later changes (the rollout's status, an edit, a
		// deletion) wake the sink. Waking on creation too cost every new
		// sink a second, empty reconcile that queued behind the others'
		// first ones and kept a fleet busy well after it had converged.
		Owns(&appsv1.Deployment{}, builder.WithPredicates(ignoreCreate)).
		Owns(&corev1.Service{}, builder.WithPredicates(ignoreCreate)).
		Owns(&policyv1.PodDisruptionBudget{}, builder.WithPredicates(ignoreCreate)).
		// Only the Secrets' metadata is cached: the operator must not hold
		// every Secret of the cluster in memory. Their data is read on
		// demand through the APIReader.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.sinksUsingSecret), builder.OnlyMetadata).
		// The pods are the ReplicaSets' children, not the sink's: they
		// are mapped to their sink by label. The cache holds worker pods
		// only (CacheOptions).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(sinkOfWorkerPod), builder.WithPredicates(workerPodChanged)).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: max(r.Concurrency, 1),
			// Retries of transient failures (NATS down) back off from 1s to
			// a minute, never a hot loop and never longer than a minute.
			RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](time.Second, time.Minute),
		}).
		Named("warehousesink")
	if r.StatusRefresh > 0 {
		r.lag = newLagRefresher(mgr.GetClient(), r.StatusRefresh)
		if err := mgr.Add(r.lag); err != nil {
			return err
		}
		b = b.WatchesRawSource(source.Channel(r.lag.wake, &handler.TypedEnqueueRequestForObject[*jetsinkv1.WarehouseSink]{}))
	}
	return b.Complete(rec)
}

// ignoreCreate passes every event but creation.
var ignoreCreate = predicate.Funcs{CreateFunc: func(event.CreateEvent) bool { return false }}

// workerPodChanged passes a worker pod's change only when it changes what
// the sink's status shows of it: a container's readiness, restart count or
// terminations (see containerStates). The kubelet writes a pod's status
// for much more (IPs, start times, probe results, resources): a fleet's
// pods must not wake their sinks for those. A pod's creation is the
// Deployment's doing and holds no termination yet (at startup every sink
// is reconciled anyway); its deletion matters only when it took a failure
// the sink shows.
var workerPodChanged = predicate.Funcs{
	CreateFunc: func(event.CreateEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*corev1.Pod)
		now, okNew := e.ObjectNew.(*corev1.Pod)
		return !okOld || !okNew || !slices.Equal(containerStates(old), containerStates(now))
	},
	DeleteFunc: func(e event.DeleteEvent) bool {
		pod, ok := e.Object.(*corev1.Pod)
		return !ok || len(terminations(pod)) > 0
	},
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// containerState is what the sink's status reads of a container.
type containerState struct {
	name       string
	ready      bool
	restarts   int32
	terminated terminatedState
	last       terminatedState
}

// terminatedState is a termination, or its absence (the zero value).
type terminatedState struct {
	exitCode   int32
	reason     string
	finishedAt int64 // Unix seconds, the API's precision
}

func containerStates(pod *corev1.Pod) []containerState {
	out := make([]containerState, 0, len(pod.Status.ContainerStatuses))
	for _, cs := range pod.Status.ContainerStatuses {
		out = append(out, containerState{
			name: cs.Name, ready: cs.Ready, restarts: cs.RestartCount,
			terminated: terminatedOf(cs.State.Terminated), last: terminatedOf(cs.LastTerminationState.Terminated),
		})
	}
	return out
}

func terminatedOf(t *corev1.ContainerStateTerminated) terminatedState {
	if t == nil {
		return terminatedState{}
	}
	return terminatedState{exitCode: t.ExitCode, reason: t.Reason, finishedAt: t.FinishedAt.Unix()}
}

// sinkOfWorkerPod is the sink whose Deployment runs the pod: the one its
// instance label names (workload.SelectorLabels), in its namespace.
func sinkOfWorkerPod(_ context.Context, pod client.Object) []reconcile.Request {
	l := pod.GetLabels()
	if l[workload.LabelName] != workload.WorkerName || l[workload.LabelInstance] == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: pod.GetNamespace(), Name: l[workload.LabelInstance]}}}
}

// secretRefs are the names of the Secrets the sink reads.
func secretRefs(sink *jetsinkv1.WarehouseSink) []string {
	var names []string
	for _, u := range workload.SecretUses(sink) {
		names = append(names, u.Ref.Name)
	}
	return names
}

func (r *WarehouseSinkReconciler) sinksUsingSecret(ctx context.Context, secret client.Object) []reconcile.Request {
	var sinks jetsinkv1.WarehouseSinkList
	if err := r.List(ctx, &sinks, client.InNamespace(secret.GetNamespace()),
		client.MatchingFields{secretRefIndex: secret.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list sinks using a Secret", "secret", secret.GetName())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(sinks.Items))
	for _, s := range sinks.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&s)})
	}
	return reqs
}
