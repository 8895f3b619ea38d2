// Package controllers reconciles WarehouseSinks. For each sink it checks
// what the API server's schema cannot (the image policy, the worker's own
// validation), resolves the credential Secrets, makes the JetStream durable
// consumer match the spec — only a consumer the sink owns, which its
// metadata says — server-side applies the workers' Deployment, metrics
// Service and PodDisruptionBudget (built by the workload package), checks
// that the workers can write to the bucket, and writes the status once, at
// the end, as kstatus reads it (Ready, Reconciling, Stalled). A problem
// stops the reconcile where it is found and becomes the conditions' reason
// and an Event; the children are then left as they were.
//
// The workers' pods are read too, from a cache of worker pods only: a
// container that was OOMKilled or crashed becomes status.lastWorkerFailure,
// a Warning Event once per failure and, while it keeps a worker
// unavailable, the Ready reason (WorkerOOMKilled, WorkerCrashed) with what
// to change.
//
// A converged sink is not reconciled again until something it depends on
// changes (a worker pod does when a container fails, restarts or changes
// readiness). Its lag (status.consumer) is kept current by the lag refresher
// instead: once a reconcile has put the consumer in place it hands the sink
// over, and the refresher reads all followed consumers in one batch per
// interval and patches only the statuses whose lag moved meaningfully. A
// consumer it cannot read goes back to the reconciler, which reports why;
// so does every sink every ten intervals, to recheck its destination (a
// bucket deleted or a policy revoked after convergence is nothing the
// operator can watch).
package controllers

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/csaupgrade"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// ConsumerFinalizer guards deletion of a sink whose consumer must be
// deleted with it (source.consumerDeletionPolicy: Delete).
const ConsumerFinalizer = "jetsink.dev/consumer"

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

	// DeletionGiveUp is how long the finalizer of a Delete-policy sink
	// retries deleting its consumer before it lets the sink go anyway,
	// leaving the consumer with a Warning Event; 0 means 5 minutes.
	DeletionGiveUp time.Duration

	consumers consumers
	lag       *lagRefresher // nil when StatusRefresh is 0
	// lastGood is the configuration each sink last reached NATS with, so
	// its finalizer can still delete the consumer once the Secret is gone.
	lastGood lastGoodConfigs
}

// +kubebuilder:rbac:groups=jetsink.dev,resources=warehousesinks,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=jetsink.dev,resources=warehousesinks/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=jetsink.dev,resources=warehousesinks/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one sink's consumer, children and status in line with
// its spec.
func (r *WarehouseSinkReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	sink := &jetsinkv1.WarehouseSink{}
	if err := r.Get(ctx, req.NamespacedName, sink); err != nil {
		if apierrors.IsNotFound(err) {
			r.lag.untrack(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !sink.DeletionTimestamp.IsZero() {
		r.lag.untrack(req.NamespacedName)
		return r.finalize(ctx, sink)
	}
	if err := r.syncFinalizer(ctx, sink); err != nil {
		return requeueOnConflict(err)
	}

	before := sink.DeepCopy()
	dep, err := r.reconcile(ctx, sink)
	var p *problem
	if err != nil && !errors.As(err, &p) {
		if apierrors.IsConflict(err) {
			return requeueOnConflict(err) // someone wrote first: read again, say nothing
		}
		p = retrying(jetsinkv1.ReasonReconcileFailed, "%v", err)
	}
	// The pods are read from the cache whatever stopped the reconcile: a
	// worker crashing is worth showing beside any other problem.
	workers, err := r.workerHealth(ctx, sink)
	if err != nil && p == nil {
		p = retrying(jetsinkv1.ReasonReconcileFailed, "%v", err)
	}
	summarize(sink, p, dep, workers)
	if err := r.patchStatus(ctx, before, sink, workers); err != nil {
		return requeueOnConflict(err)
	}
	switch {
	case p == nil && r.lag == nil:
		// No refresher to wake it: recheck the consumer and the
		// destination now and then all the same.
		return ctrl.Result{RequeueAfter: recheckWithoutRefresh}, nil
	case p == nil:
		// No requeue: the lag refresher keeps status.consumer current, and
		// wakes the sink should its consumer become unreadable and, now
		// and then, to recheck the destination.
		return ctrl.Result{}, nil
	case fixedByAWatchedChange[p.Reason]:
		// Only an edit of the sink or of a Secret it names fixes this, and
		// both wake it: retrying would only repeat the message.
		ctrl.LoggerFrom(ctx).Info("Sink is stalled", "reason", p.Reason, "message", p.Message)
		return ctrl.Result{}, reconcile.TerminalError(p)
	default:
		// Retried with the controller's backoff (1 s doubling to a
		// minute): a server coming back, a stream or bucket created, a
		// policy granted are not events the operator can watch.
		return ctrl.Result{}, p
	}
}

// fixedByAWatchedChange are the problems only a change the controller
// watches can fix: the sink's spec or annotations, a Secret it names, its
// Deployment.
var fixedByAWatchedChange = map[string]bool{
	jetsinkv1.ReasonInvalidSpec:              true,
	jetsinkv1.ReasonImageNotAllowed:          true,
	jetsinkv1.ReasonSecretNotFound:           true,
	jetsinkv1.ReasonSecretKeyMissing:         true,
	jetsinkv1.ReasonProgressDeadlineExceeded: true,
}

// recheckWithoutRefresh is how often a healthy sink is reconciled again when
// the lag refresher is off (StatusRefresh 0).
const recheckWithoutRefresh = 5 * time.Minute

// requeueOnConflict turns a write conflict (the cache was behind) into a
// quiet retry; other errors go to the controller's backoff.
func requeueOnConflict(err error) (ctrl.Result, error) {
	if apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	return ctrl.Result{}, err
}

// reconcile does the work. It returns the live Deployment once it got that
// far, and a *problem when something stops the sink.
func (r *WarehouseSinkReconciler) reconcile(ctx context.Context, sink *jetsinkv1.WarehouseSink) (*appsv1.Deployment, error) {
	log := ctrl.LoggerFrom(ctx)
	key := client.ObjectKeyFromObject(sink)
	if p := r.checkImage(sink); p != nil {
		return nil, p
	}
	creds, cfg, err := r.credentials(ctx, sink)
	if err != nil {
		r.lag.untrack(key) // its credentials may be stale
		return nil, err
	}
	// The schema refuses most bad specs; the worker's own validation is the
	// last word, checked here so that no pod starts only to exit with it.
	if err := cfg.Validate(); err != nil {
		return nil, stalled(jetsinkv1.ReasonInvalidSpec, "the workers would refuse this spec: %v", err)
	}

	want := cfg.ConsumerConfig()
	want.MaxAckPending = workload.MaxAckPending(sink, cfg)
	adopt := sink.Annotations[jetsinkv1.AnnotationAdoptConsumer] == "true"
	got, err := r.consumers.ensure(ctx, cfg, want, ownerOf(sink), adopt, fleet{ctx, r})
	if err != nil {
		r.lag.untrack(key)
		var p *problem
		if errors.As(err, &p) && p.Reason == jetsinkv1.ReasonConsumerOwnedElsewhere {
			// Workers started before (by an earlier jetsink, or before
			// the consumer changed hands) must not go on splitting
			// another sink's events into this bucket.
			if running, serr := r.stopWorkers(ctx, sink); serr != nil {
				return nil, serr
			} else if running > 0 {
				log.Info("Stopped the workers of a sink whose consumer is not its own", "running", running)
			}
		}
		return nil, err
	}
	r.lastGood.remember(sink.UID, cfg)
	if got.action != "" {
		log.Info(got.action+" consumer", "stream", cfg.Stream, "consumer", cfg.Consumer)
		r.Recorder.Eventf(sink, nil, corev1.EventTypeNormal, "Consumer"+got.action, "Reconcile",
			"%s consumer %q on stream %q", got.action, cfg.Consumer, cfg.Stream)
	}
	sink.Status.Consumer = consumerStatus(got.info)
	// From here on the refresher keeps the lag current, with these
	// credentials, until the next reconcile says otherwise. Problems past
	// this point (the Deployment, S3) leave the consumer readable, and its
	// lag is worth showing while they last.
	r.lag.track(key, cfg)

	dep, err := r.applyChildren(ctx, sink, creds)
	if err != nil {
		return dep, err
	}
	// The workers run even when the bucket check fails: they retry what
	// they cannot write (never ACK it) and pick up as soon as S3 lets
	// them, while the sink says why it is stuck.
	if p := checkDestination(ctx, cfg, creds.S3); p != nil {
		return dep, p
	}
	if p := checkCatalog(ctx, cfg.Table, creds.Catalog); p != nil {
		return dep, p
	}
	log.V(1).Info("Reconciled sink", "replicas", dep.Status.Replicas, "ready", dep.Status.ReadyReplicas,
		"lag", sink.Status.Consumer.Lag)
	return dep, nil
}

// checkImage refuses a spec.image the manager's policy does not allow.
func (r *WarehouseSinkReconciler) checkImage(sink *jetsinkv1.WarehouseSink) *problem {
	img := sink.Spec.Image
	if img == "" || r.AllowedImages == nil {
		return nil
	}
	for _, pattern := range r.AllowedImages {
		if ok, _ := path.Match(pattern, img); ok {
			return nil
		}
	}
	if len(r.AllowedImages) == 0 {
		return stalled(jetsinkv1.ReasonImageNotAllowed,
			"spec.image %q: this operator runs every sink with its own worker image and allows no override; remove spec.image", img)
	}
	return stalled(jetsinkv1.ReasonImageNotAllowed,
		"spec.image %q is not allowed by this operator (allowed: %s): remove spec.image or use an allowed image",
		img, strings.Join(r.AllowedImages, ", "))
}

// fleet answers the consumer ownership questions from the cache of sinks.
type fleet struct {
	ctx context.Context
	r   *WarehouseSinkReconciler
}

func (f fleet) exists(o owner) bool {
	err := f.r.Get(f.ctx, types.NamespacedName{Namespace: o.Namespace, Name: o.Name}, &jetsinkv1.WarehouseSink{})
	return !apierrors.IsNotFound(err) // on doubt, it exists: never take a consumer that may be in use
}

func (f fleet) others(cfg config.Config, self owner) []owner {
	var sinks jetsinkv1.WarehouseSinkList
	if err := f.r.List(f.ctx, &sinks); err != nil {
		return []owner{{Name: "(unknown: " + err.Error() + ")"}} // on doubt, shared
	}
	var out []owner
	for i := range sinks.Items {
		s := &sinks.Items[i]
		c := workload.WorkerConfig(s)
		if o := ownerOf(s); o != self && c.NATSURL == cfg.NATSURL && c.Stream == cfg.Stream && c.Consumer == cfg.Consumer {
			out = append(out, o)
		}
	}
	return out
}

// credentials fetches the Secrets the sink names and returns them with the
// worker configuration, its credential fields filled from them.
func (r *WarehouseSinkReconciler) credentials(ctx context.Context, sink *jetsinkv1.WarehouseSink) (workload.Credentials, config.Config, error) {
	cfg := workload.WorkerConfig(sink)
	var creds workload.Credentials
	for _, u := range workload.SecretUses(sink) {
		s, err := r.secret(ctx, sink, u.Ref.Name, u.Field, u.Vars)
		if err != nil {
			return creds, cfg, err
		}
		creds.Set(u, s)
		cfg.FromSecret(u.Vars, s.Data)
	}
	return creds, cfg, nil
}

// secret gets a Secret the sink names and checks it has every required key.
func (r *WarehouseSinkReconciler) secret(ctx context.Context, sink *jetsinkv1.WarehouseSink, name, field string, keys []config.SecretEnv) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: sink.Namespace, Name: name}, s)
	if apierrors.IsNotFound(err) {
		return nil, stalled(jetsinkv1.ReasonSecretNotFound, "Secret %q (%s) not found in namespace %q", name, field, sink.Namespace)
	}
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if _, ok := s.Data[k.Key]; !ok && !k.Optional {
			return nil, stalled(jetsinkv1.ReasonSecretKeyMissing, "Secret %q (%s) has no key %q", name, field, k.Key)
		}
	}
	return s, nil
}

// applyChildren applies the Deployment, the metrics Service and the
// PodDisruptionBudget, and records one Event naming those it created (one
// write, not one per child: at a thousand sinks Events are a good part of
// the API server's load).
func (r *WarehouseSinkReconciler) applyChildren(ctx context.Context, sink *jetsinkv1.WarehouseSink, creds workload.Credentials) (*appsv1.Deployment, error) {
	var created []string
	defer func() {
		if len(created) > 0 {
			r.Recorder.Eventf(sink, nil, corev1.EventTypeNormal, "Created", "Create", "Created %s", strings.Join(created, ", "))
		}
	}()
	dep, err := r.applyDeployment(ctx, sink, creds, &created)
	if err != nil {
		return nil, err
	}
	if _, err := r.apply(ctx, sink, workload.Service(sink), &corev1.Service{}, nil, &created); err != nil {
		return dep, err
	}
	return dep, r.applyDisruptionBudget(ctx, sink, &created)
}

// applyDeployment applies the workers' Deployment and returns it as the
// server has it. It also restores a replica count someone changed on the
// Deployment itself (the sink is the one place to scale) and says when the
// sink scaled.
func (r *WarehouseSinkReconciler) applyDeployment(ctx context.Context, sink *jetsinkv1.WarehouseSink, creds workload.Credentials, created *[]string) (*appsv1.Deployment, error) {
	desired := workload.Deployment(sink, r.WorkerImage, creds)
	live := &appsv1.Deployment{}
	var was *int32
	changed, err := r.apply(ctx, sink, desired, live, func() bool {
		was = live.Spec.Replicas
		return live.Spec.Replicas == nil || *live.Spec.Replicas != *desired.Spec.Replicas
	}, created)
	if err != nil {
		return nil, err
	}
	if changed && was != nil && *was != *desired.Spec.Replicas {
		r.Recorder.Eventf(sink, live, corev1.EventTypeNormal, "Scaled", "Scale",
			"Scaled workers from %d to %d", *was, *desired.Spec.Replicas)
	}
	return live, nil
}

// applyDisruptionBudget keeps the workers' PodDisruptionBudget, or deletes
// the one the sink owns when it asks for none.
func (r *WarehouseSinkReconciler) applyDisruptionBudget(ctx context.Context, sink *jetsinkv1.WarehouseSink, created *[]string) error {
	if pdb := workload.PodDisruptionBudget(sink); pdb != nil {
		_, err := r.apply(ctx, sink, pdb, &policyv1.PodDisruptionBudget{}, nil, created)
		return err
	}
	live := &policyv1.PodDisruptionBudget{}
	err := r.Get(ctx, types.NamespacedName{Namespace: sink.Namespace, Name: sink.Name}, live)
	if err != nil || !metav1.IsControlledBy(live, sink) {
		return client.IgnoreNotFound(err)
	}
	return client.IgnoreNotFound(r.Delete(ctx, live))
}

// apply makes the live object (read into live) match desired, a builder's
// object, by server-side apply as the operator's field manager: fields
// others set (a `kubectl rollout restart` annotation, a mesh's injected
// labels) are kept, and no stale read can make it fail with a conflict. An
// object of that name the sink does not control is left alone and
// reported. The apply is skipped when the live object's spec hash matches
// and drifted (optional) reports no drift the hash cannot see; changed
// says whether it was applied; an object created is added to created as
// "<Kind> <name>".
func (r *WarehouseSinkReconciler) apply(ctx context.Context, sink *jetsinkv1.WarehouseSink, desired, live client.Object, drifted func() bool, created *[]string) (changed bool, err error) {
	log := ctrl.LoggerFrom(ctx)
	kind := desired.GetObjectKind().GroupVersionKind().Kind // the builders set it
	if err := controllerutil.SetControllerReference(sink, desired, r.Scheme()); err != nil {
		return false, err
	}
	err = r.Get(ctx, client.ObjectKeyFromObject(desired), live)
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return false, err
	}
	if exists {
		if !metav1.IsControlledBy(live, sink) {
			return false, stalled(jetsinkv1.ReasonNameConflict,
				"a %s named %q already exists and is not owned by this sink: rename or delete it", kind, live.GetName())
		}
		drift := drifted != nil && drifted()
		if live.GetAnnotations()[workload.AnnotationSpecHash] == desired.GetAnnotations()[workload.AnnotationSpecHash] && !drift {
			return false, nil
		}
	}
	if !exists {
		// A plain create costs the API server much less than an apply
		// that creates, and a fleet's first reconciles are all creates;
		// its fields (owned by an Update of this manager) are taken over
		// by the first apply that changes the object.
		err := r.Create(ctx, desired, client.FieldOwner(workload.ManagerName))
		if err == nil {
			log.Info("Created "+kind, "name", desired.GetName())
			*created = append(*created, kind+" "+desired.GetName())
			return true, copyInto(desired, live)
		}
		if apierrors.IsAlreadyExists(err) {
			// The cache is behind: read again (and check the owner)
			// before writing, as after any conflict.
			gvk := desired.GetObjectKind().GroupVersionKind()
			return false, apierrors.NewConflict(schema.GroupResource{Group: gvk.Group, Resource: kind},
				desired.GetName(), err)
		}
		return false, fmt.Errorf("create %s: %w", kind, err)
	}
	if err := r.takeOverUpdatedFields(ctx, desired); err != nil {
		return false, fmt.Errorf("take over the fields of %s %s: %w", kind, desired.GetName(), err)
	}
	u, err := applyObject(desired)
	if err != nil {
		return false, err
	}
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(workload.ManagerName), client.ForceOwnership); err != nil {
		return false, fmt.Errorf("apply %s: %w", kind, err)
	}
	// The answer is the object as stored. Reading it back from the cache
	// instead would race the informer and fail whenever many sinks are
	// created at once.
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, live); err != nil {
		return false, err
	}
	log.Info("Updated "+kind, "name", desired.GetName())
	return true, nil
}

// copyInto copies src into dst, an object of the same kind.
func copyInto(src, dst client.Object) error {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(src)
	if err != nil {
		return err
	}
	return runtime.DefaultUnstructuredConverter.FromUnstructured(m, dst)
}

// updateManagers are the field managers that write the children by Update:
// "manager" (0.1, the binary's default), this operator's own creates, and
// updateManagerStop (the finalizer's and the ownership check's replica
// patch).
var updateManagers = sets.New("manager", workload.ManagerName, updateManagerStop)

// updateManagerStop is the field manager of stopWorkers' replica patch; a
// name of its own, so that patch never makes the apply's manager an Update
// owner too.
const updateManagerStop = "jetsink-stop"

// takeOverUpdatedFields makes the fields earlier Updates own the apply's, so
// the next apply can also remove what the sink no longer asks for (a pod
// annotation, an env entry): fields owned by an Update manager stay when an
// apply drops them. The cache strips managed fields, so they are read from
// the API server (metadata only), before each apply to an existing object.
func (r *WarehouseSinkReconciler) takeOverUpdatedFields(ctx context.Context, live client.Object) error {
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(live.GetObjectKind().GroupVersionKind())
	if meta.GroupVersionKind().Empty() {
		gvk, err := r.GroupVersionKindFor(live)
		if err != nil {
			return err
		}
		meta.SetGroupVersionKind(gvk)
	}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(live), meta); err != nil {
		return client.IgnoreNotFound(err)
	}
	patch, err := csaupgrade.UpgradeManagedFieldsPatch(meta, updateManagers, workload.ManagerName)
	if err != nil || patch == nil {
		return err
	}
	return r.Patch(ctx, meta, client.RawPatch(types.JSONPatchType, patch))
}

// applyObject is desired as an apply request: everything the builder set,
// without what only the server writes (status, creation timestamps).
func applyObject(desired client.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(desired)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "spec", "template", "metadata", "creationTimestamp")
	return u, nil
}

// syncFinalizer holds the consumer finalizer exactly when the deletion
// policy is Delete. The patch carries the resourceVersion, so it cannot
// drop a finalizer someone else added meanwhile.
func (r *WarehouseSinkReconciler) syncFinalizer(ctx context.Context, sink *jetsinkv1.WarehouseSink) error {
	wantIt := sink.Spec.Source.ConsumerDeletionPolicy == jetsinkv1.ConsumerDelete
	if wantIt == controllerutil.ContainsFinalizer(sink, ConsumerFinalizer) {
		return nil
	}
	patch := client.MergeFromWithOptions(sink.DeepCopy(), client.MergeFromWithOptimisticLock{})
	if wantIt {
		controllerutil.AddFinalizer(sink, ConsumerFinalizer)
	} else {
		controllerutil.RemoveFinalizer(sink, ConsumerFinalizer)
	}
	return r.Patch(ctx, sink, patch)
}
