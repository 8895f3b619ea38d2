// Package controllers reconciles WarehouseSinks. For each sink it resolves
// the credential Secrets, makes the JetStream durable consumer match the
// spec, applies the workers' Deployment and metrics Service (built by the
// workload package) and writes the status once, at the end. Problems the
// user must fix become a Degraded condition and an Event; the children are
// then left as they were, never half-updated.
//
// A converged sink is not reconciled again until something it depends on
// changes. Its lag (status.consumer) is kept current by the lag refresher
// instead: once a reconcile has put the consumer in place it hands the sink
// over, and the refresher reads all followed consumers in one batch per
// interval and patches only the statuses that moved. A consumer it cannot
// read goes back to the reconciler, which reports why.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// ConsumerFinalizer guards deletion of a sink whose consumer must be
// deleted with it (source.consumerDeletionPolicy: Delete).
const ConsumerFinalizer = "jetsink.dev/consumer"

// secretWaitRequeue re-checks a sink waiting for a Secret. Secrets are
// watched, so this is only a safety net.
const secretWaitRequeue = 5 * time.Minute

// WarehouseSinkReconciler turns WarehouseSinks into running workers.
type WarehouseSinkReconciler struct {
	client.Client
	// APIReader reads Secrets straight from the API server, so the
	// operator never caches every Secret of the cluster.
	APIReader client.Reader
	Recorder  events.EventRecorder
	// WorkerImage runs the workers of sinks that name no image.
	WorkerImage string
	// AllowedImages are the images a sink may name in spec.image, as
	// path.Match patterns (registry.example.com/jetsink/*). nil allows any
	// image; an empty, non-nil list forbids overrides, so every sink runs
	// WorkerImage. Whoever may create a sink may otherwise run any image
	// in its namespace.
	AllowedImages []string
	// StatusRefresh is how often the consumer lag of every healthy sink is
	// re-read into its status, in one batched loop (lagRefresher) rather
	// than a requeue per sink; 0 turns the refresh off.
	StatusRefresh time.Duration
	// Concurrency is how many sinks are reconciled at once. A reconcile
	// mostly waits on NATS and S3, so more than one keeps a large fleet
	// converging quickly; each sink is still reconciled by one at a time.
	Concurrency int

	consumers consumers
	lag       *lagRefresher // nil when StatusRefresh is 0
}

// +kubebuilder:rbac:groups=jetsink.dev,resources=warehousesinks,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=jetsink.dev,resources=warehousesinks/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=jetsink.dev,resources=warehousesinks/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one sink's children and status in line with its spec.
func (r *WarehouseSinkReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	sink := &jetsinkv1.WarehouseSink{}
	if err := r.Get(ctx, req.NamespacedName, sink); err != nil {
		if apierrors.IsNotFound(err) {
			r.lag.untrack(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !sink.DeletionTimestamp.IsZero() {
		r.lag.untrack(req.NamespacedName)
		return ctrl.Result{}, r.finalize(ctx, sink)
	}
	if err := r.syncFinalizer(ctx, sink); err != nil {
		return ctrl.Result{}, err
	}

	before := sink.DeepCopy()
	defer func() {
		retErr = errors.Join(retErr, r.patchStatus(ctx, before, sink))
	}()

	result, err := r.reconcile(ctx, sink)
	var p *problem
	if errors.As(err, &p) {
		markDegraded(sink, p)
		ctrl.LoggerFrom(ctx).Info("Sink is degraded", "reason", p.Reason, "message", p.Message)
		if p.transient {
			return ctrl.Result{}, err // retried with the controller's backoff
		}
		return ctrl.Result{RequeueAfter: secretWaitRequeue}, nil
	}
	if err != nil {
		setCondition(sink, jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonReconcileFailed, err.Error())
	}
	return result, err
}

// reconcile does the work; a *problem error is one the user must fix.
func (r *WarehouseSinkReconciler) reconcile(ctx context.Context, sink *jetsinkv1.WarehouseSink) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	key := client.ObjectKeyFromObject(sink)
	creds, cfg, err := r.credentials(ctx, sink)
	if err != nil {
		r.lag.untrack(key) // its credentials may be stale
		return ctrl.Result{}, err
	}

	want := cfg.ConsumerConfig()
	want.MaxAckPending = workload.MaxAckPending(sink, cfg)
	info, err := r.consumers.ensure(ctx, cfg, want)
	if err != nil {
		r.lag.untrack(key)
		return ctrl.Result{}, err
	}
	sink.Status.Consumer = consumerStatus(info)
	// From here on the refresher keeps the lag current, with these
	// credentials, until the next reconcile says otherwise. Problems past
	// this point (the Deployment, S3) leave the consumer readable, and its
	// lag is worth showing while they last.
	r.lag.track(key, cfg)

	dep := workload.Deployment(sink, r.WorkerImage, creds)
	live := &appsv1.Deployment{}
	if err := r.applyOwned(ctx, sink, dep, live, func() {
		live.Spec = dep.Spec
	}, func() bool {
		// Also restore a replica count someone changed on the Deployment
		// itself: the sink is the one place to scale.
		return live.Spec.Replicas == nil || *live.Spec.Replicas != *dep.Spec.Replicas
	}); err != nil {
		return ctrl.Result{}, err
	}

	svc := workload.Service(sink)
	liveSvc := &corev1.Service{}
	if err := r.applyOwned(ctx, sink, svc, liveSvc, func() {
		// Keep what the API server allocated; the rest is ours.
		svc.Spec.ClusterIP, svc.Spec.ClusterIPs = liveSvc.Spec.ClusterIP, liveSvc.Spec.ClusterIPs
		svc.Spec.IPFamilies, svc.Spec.IPFamilyPolicy = liveSvc.Spec.IPFamilies, liveSvc.Spec.IPFamilyPolicy
		liveSvc.Spec = svc.Spec
	}, nil); err != nil {
		return ctrl.Result{}, err
	}

	observeWorkers(sink, live)
	// The workers run even when the bucket check fails: they NAK (never
	// ACK) what they cannot write and pick up as soon as S3 lets them,
	// while the sink says why it is stuck.
	if p := checkDestination(ctx, cfg, creds.S3); p != nil {
		return ctrl.Result{}, p
	}
	log.V(1).Info("Reconciled sink", "replicas", sink.Status.Replicas, "ready", sink.Status.ReadyReplicas,
		"lag", info.NumPending)
	// No requeue: the lag refresher keeps status.consumer current and
	// wakes the sink should its consumer become unreadable.
	return ctrl.Result{}, nil
}

// credentials fetches the Secrets the sink names and returns them with the
// worker configuration, its credential fields filled from them.
func (r *WarehouseSinkReconciler) credentials(ctx context.Context, sink *jetsinkv1.WarehouseSink) (workload.Credentials, config.Config, error) {
	cfg := workload.WorkerConfig(sink)
	var creds workload.Credentials
	var err error
	if ref := sink.Spec.Source.CredentialsSecretRef; ref != nil {
		if creds.NATS, err = r.secret(ctx, sink, ref.Name, "source.credentialsSecretRef", config.NATSSecretEnv); err != nil {
			return creds, cfg, err
		}
		cfg.FromSecret(config.NATSSecretEnv, creds.NATS.Data)
	}
	if ref := sink.Spec.Destination.CredentialsSecretRef; ref != nil {
		if creds.S3, err = r.secret(ctx, sink, ref.Name, "destination.credentialsSecretRef", config.S3SecretEnv); err != nil {
			return creds, cfg, err
		}
	}
	return creds, cfg, nil
}

// secret gets a Secret the sink names and checks it has every required key.
func (r *WarehouseSinkReconciler) secret(ctx context.Context, sink *jetsinkv1.WarehouseSink, name, field string, keys []config.SecretEnv) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: sink.Namespace, Name: name}, s)
	if apierrors.IsNotFound(err) {
		return nil, &problem{Reason: jetsinkv1.ReasonSecretNotFound,
			Message: fmt.Sprintf("Secret %q (%s) not found in namespace %q", name, field, sink.Namespace)}
	}
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if _, ok := s.Data[k.Key]; !ok && !k.Optional {
			return nil, &problem{Reason: jetsinkv1.ReasonSecretKeyMissing,
				Message: fmt.Sprintf("Secret %q (%s) has no key %q", name, field, k.Key)}
		}
	}
	return s, nil
}

// applyOwned makes the live object (read into live) match desired. It
// creates desired when absent. An object of that name the sink does not
// control is left alone and reported. Otherwise the live object is updated
// (mutate copies the desired spec onto it) when the desired spec hash
// changed or drifted reports a drift the hash cannot see.
func (r *WarehouseSinkReconciler) applyOwned(ctx context.Context, sink *jetsinkv1.WarehouseSink, desired, live client.Object, mutate func(), drifted func() bool) error {
	log := ctrl.LoggerFrom(ctx)
	kind := desired.GetObjectKind().GroupVersionKind().Kind // the builders set it
	if err := controllerutil.SetControllerReference(sink, desired, r.Scheme()); err != nil {
		return err
	}
	err := r.Get(ctx, client.ObjectKeyFromObject(desired), live)
	if apierrors.IsNotFound(err) {
		if err := r.Create(ctx, desired); err != nil {
			return fmt.Errorf("create %s: %w", kind, err)
		}
		log.Info("Created "+kind, "name", desired.GetName())
		r.Recorder.Eventf(sink, desired, corev1.EventTypeNormal, "Created", "Create", "Created %s %s", kind, desired.GetName())
		// Create filled desired with what the server stored. Reading it back
		// from the cache instead would race the informer and fail whenever
		// many sinks are created at once.
		reflect.ValueOf(live).Elem().Set(reflect.ValueOf(desired).Elem())
		return nil
	}
	if err != nil {
		return err
	}
	if !metav1.IsControlledBy(live, sink) {
		return &problem{Reason: jetsinkv1.ReasonNameConflict,
			Message: fmt.Sprintf("a %s named %q already exists and is not owned by this sink: rename or delete it", kind, live.GetName())}
	}
	hash := desired.GetAnnotations()[workload.AnnotationSpecHash]
	if live.GetAnnotations()[workload.AnnotationSpecHash] == hash && (drifted == nil || !drifted()) {
		return nil
	}
	mutate()
	live.SetLabels(mergeMaps(live.GetLabels(), desired.GetLabels()))
	live.SetAnnotations(mergeMaps(live.GetAnnotations(), desired.GetAnnotations()))
	if err := r.Update(ctx, live); err != nil {
		return fmt.Errorf("update %s: %w", kind, err)
	}
	log.Info("Updated "+kind, "name", live.GetName())
	return nil
}

func mergeMaps(dst, src map[string]string) map[string]string {
	if dst == nil {
		dst = map[string]string{}
	}
	for k, v := range src {
		dst[k] = v
	}
	return dst
}

// syncFinalizer holds the consumer finalizer exactly when the deletion
// policy is Delete.
func (r *WarehouseSinkReconciler) syncFinalizer(ctx context.Context, sink *jetsinkv1.WarehouseSink) error {
	wantIt := sink.Spec.Source.ConsumerDeletionPolicy == jetsinkv1.ConsumerDelete
	if wantIt == controllerutil.ContainsFinalizer(sink, ConsumerFinalizer) {
		return nil
	}
	patch := client.MergeFrom(sink.DeepCopy())
	if wantIt {
		controllerutil.AddFinalizer(sink, ConsumerFinalizer)
	} else {
		controllerutil.RemoveFinalizer(sink, ConsumerFinalizer)
	}
	return r.Patch(ctx, sink, patch)
}

// finalize deletes the consumer of a sink being deleted under the Delete
// policy, then lets the deletion finish. The Deployment and Service go with
// the sink through their owner references.
func (r *WarehouseSinkReconciler) finalize(ctx context.Context, sink *jetsinkv1.WarehouseSink) error {
	if !controllerutil.ContainsFinalizer(sink, ConsumerFinalizer) {
		return nil
	}
	_, cfg, err := r.credentials(ctx, sink)
	if err == nil {
		err = r.consumers.remove(ctx, cfg)
	}
	if err != nil {
		r.Recorder.Eventf(sink, nil, corev1.EventTypeWarning, "ConsumerDeleteFailed", "Delete",
			"cannot delete consumer %q yet: %v", cfg.Consumer, err)
		return err
	}
	ctrl.LoggerFrom(ctx).Info("Deleted consumer", "stream", cfg.Stream, "consumer", cfg.Consumer)
	patch := client.MergeFrom(sink.DeepCopy())
	controllerutil.RemoveFinalizer(sink, ConsumerFinalizer)
	return client.IgnoreNotFound(r.Patch(ctx, sink, patch))
}
