package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// defaultDeletionGiveUp is DeletionGiveUp's default.
const defaultDeletionGiveUp = 5 * time.Minute

// stopPoll is how often the finalizer looks whether the workers stopped.
const stopPoll = 2 * time.Second

// finalize deletes the consumer of a sink being deleted under the Delete
// policy, then lets the deletion finish; the Deployment, Service and
// PodDisruptionBudget go with the sink through their owner references.
//
// Deletion always finishes. The workers are stopped first, so they drain
// (write and ACK what they hold) before their consumer goes, waiting at
// most their grace period. When the Secret is already gone (a namespace
// being deleted removes it too) the configuration the sink last reached
// NATS with is used. A consumer that is not the sink's is never deleted,
// and one that cannot be deleted within DeletionGiveUp (NATS gone for
// good) is left behind, with a Warning Event saying so and what to delete
// by hand.
func (r *WarehouseSinkReconciler) finalize(ctx context.Context, sink *jetsinkv1.WarehouseSink) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(sink, ConsumerFinalizer) {
		r.lastGood.forget(sink.UID)
		return ctrl.Result{}, nil
	}
	// What the operator last knew lives in memory only: after a restart
	// or failover, a sink deleted together with its Secret before its
	// first reconcile leaves its consumer behind (with a Warning Event).
	log := ctrl.LoggerFrom(ctx)
	age := time.Since(sink.DeletionTimestamp.Time)
	running, err := r.stopWorkers(ctx, sink)
	if err != nil {
		return requeueOnConflict(err)
	}
	if wait := time.Duration(workload.GracePeriodSeconds(sink))*time.Second + stopPoll; running > 0 && age < wait {
		log.V(1).Info("Waiting for the workers to stop before deleting the consumer", "running", running)
		return ctrl.Result{RequeueAfter: stopPoll}, nil
	}

	_, cfg, err := r.credentials(ctx, sink)
	var p *problem
	switch {
	case errors.As(err, &p):
		last, ok := r.lastGood.get(sink.UID)
		if !ok {
			return r.letGo(ctx, sink, cfg, true, "its configuration cannot be resolved ("+p.Message+") and the operator has not reached NATS for this sink since it started")
		}
		cfg = last
	case err != nil:
		return ctrl.Result{}, err
	}

	err = r.consumers.remove(ctx, cfg, ownerOf(sink))
	switch {
	case errors.Is(err, errNotOurs):
		return r.letGo(ctx, sink, cfg, false, "its metadata does not name this sink (this UID) as its owner")
	case err != nil && age < r.deletionGiveUp():
		r.Recorder.Eventf(sink, nil, corev1.EventTypeWarning, "ConsumerDeleteFailed", "Delete",
			"cannot delete consumer %q on stream %q yet (giving up %s after deletion): %v",
			cfg.Consumer, cfg.Stream, r.deletionGiveUp(), err)
		return ctrl.Result{}, err
	case err != nil:
		return r.letGo(ctx, sink, cfg, true, fmt.Sprintf("deleting it failed for %s: %v", r.deletionGiveUp(), err))
	}
	log.Info("Deleted consumer", "stream", cfg.Stream, "consumer", cfg.Consumer)
	r.Recorder.Eventf(sink, nil, corev1.EventTypeNormal, "ConsumerDeleted", "Delete",
		"Deleted consumer %q on stream %q", cfg.Consumer, cfg.Stream)
	return r.removeFinalizer(ctx, sink)
}

// letGo finishes a deletion that leaves the consumer in place, and says so;
// ours says whether the consumer is the sink's, so that deleting it by hand
// is worth suggesting (never for another sink's consumer).
func (r *WarehouseSinkReconciler) letGo(ctx context.Context, sink *jetsinkv1.WarehouseSink, cfg config.Config, ours bool, why string) (ctrl.Result, error) {
	ctrl.LoggerFrom(ctx).Info("Leaving the consumer in place", "stream", cfg.Stream, "consumer", cfg.Consumer, "why", why)
	hint := ""
	if ours {
		hint = fmt.Sprintf("; delete it by hand if it is no longer needed (nats consumer rm %s %s)", cfg.Stream, cfg.Consumer)
	}
	r.Recorder.Eventf(sink, nil, corev1.EventTypeWarning, "ConsumerNotDeleted", "Delete",
		"consumer %q on stream %q was not deleted: %s%s", cfg.Consumer, cfg.Stream, why, hint)
	return r.removeFinalizer(ctx, sink)
}

func (r *WarehouseSinkReconciler) removeFinalizer(ctx context.Context, sink *jetsinkv1.WarehouseSink) (ctrl.Result, error) {
	patch := client.MergeFromWithOptions(sink.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(sink, ConsumerFinalizer)
	if err := r.Patch(ctx, sink, patch); err != nil {
		return requeueOnConflict(client.IgnoreNotFound(err))
	}
	r.lastGood.forget(sink.UID)
	return ctrl.Result{}, nil
}

// stopWorkers scales the sink's Deployment to zero and returns how many of
// its pods still run. A Deployment of that name the sink does not control
// is not its workers, and is left alone.
func (r *WarehouseSinkReconciler) stopWorkers(ctx context.Context, sink *jetsinkv1.WarehouseSink) (int32, error) {
	dep := &appsv1.Deployment{}
	err := r.Get(ctx, types.NamespacedName{Namespace: sink.Namespace, Name: sink.Name}, dep)
	if apierrors.IsNotFound(err) || err == nil && !metav1.IsControlledBy(dep, sink) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if ptr.Deref(dep.Spec.Replicas, 1) != 0 {
		patch := client.MergeFrom(dep.DeepCopy())
		dep.Spec.Replicas = ptr.To[int32](0)
		if err := r.Patch(ctx, dep, patch, client.FieldOwner(updateManagerStop)); err != nil {
			return 0, client.IgnoreNotFound(err)
		}
	}
	return dep.Status.Replicas, nil
}

func (r *WarehouseSinkReconciler) deletionGiveUp() time.Duration {
	if r.DeletionGiveUp > 0 {
		return r.DeletionGiveUp
	}
	return defaultDeletionGiveUp
}

// lastGoodConfigs remembers, per sink, the worker configuration (with its
// credentials) that last reached NATS. It lives in memory only: the
// operator never copies a user's credentials anywhere.
type lastGoodConfigs struct {
	mu   sync.Mutex
	cfgs map[types.UID]config.Config
}

func (l *lastGoodConfigs) remember(uid types.UID, cfg config.Config) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cfgs == nil {
		l.cfgs = map[types.UID]config.Config{}
	}
	l.cfgs[uid] = cfg
}

func (l *lastGoodConfigs) get(uid types.UID) (config.Config, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cfg, ok := l.cfgs[uid]
	return cfg, ok
}

func (l *lastGoodConfigs) forget(uid types.UID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.cfgs, uid)
}
