package podrunner

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NodeName is the node the runner's Pod objects are bound to.
const NodeName = "podrunner"

// labelDeployment marks the Pod objects (and EndpointSlices) the runner
// writes with the Deployment they belong to.
const labelDeployment = "podrunner.jetsink.dev/deployment"

// podView is what the API's Pod object of a local pod should say.
type podView struct {
	name, hash  string
	template    *corev1.PodTemplateSpec
	started     time.Time
	running     bool
	ready       bool
	terminating bool
	restarts    int32
	lastErr     string
}

func (r *Runner) viewsOf(d *deployment) []podView {
	out := make([]podView, 0, len(d.pods))
	for _, p := range d.pods {
		out = append(out, podView{name: p.name, hash: p.hash, template: &p.template, started: p.started,
			running: p.running(), ready: p.ready, terminating: p.terminating, restarts: int32(p.restarts), lastErr: p.lastErr})
	}
	return out
}

// syncPods mirrors the local pods as Pod objects, as a kubelet reports the
// pods it runs: created when started, status on every change, deleted
// (gracefully while draining, then for good) when stopped. A Pod a user
// deletes (`kubectl delete pod`) has its process terminated, and the
// Deployment logic starts a replacement.
func (r *Runner) syncPods(ctx context.Context, key types.NamespacedName, dep metav1.Object, views []podView) {
	var have corev1.PodList
	if err := r.c.List(ctx, &have, client.InNamespace(key.Namespace), client.MatchingLabels{labelDeployment: key.Name}); err != nil {
		return
	}
	want := map[string]podView{}
	for _, v := range views {
		want[v.name] = v
	}
	for i := range have.Items {
		obj := &have.Items[i]
		v, ok := want[obj.Name]
		delete(want, obj.Name)
		switch {
		case !ok:
			// The process is gone: the kubelet's final, immediate delete.
			_ = client.IgnoreNotFound(r.c.Delete(ctx, obj, client.GracePeriodSeconds(0)))
		case !obj.DeletionTimestamp.IsZero() && !v.terminating:
			r.userDeleted(key, obj.Name)
		case v.terminating && obj.DeletionTimestamp.IsZero():
			_ = client.IgnoreNotFound(r.c.Delete(ctx, obj))
		default:
			r.writePodStatus(ctx, obj, v)
		}
	}
	if dep == nil {
		return
	}
	for _, v := range want {
		if v.terminating {
			continue
		}
		obj := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: v.name, Namespace: key.Namespace,
				Labels:      mergeLabels(v.template.Labels, map[string]string{labelDeployment: key.Name, "pod-template-hash": v.hash}),
				Annotations: v.template.Annotations,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: dep.GetName(),
					UID: dep.GetUID(), Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
			},
			Spec: *v.template.Spec.DeepCopy(),
		}
		obj.Spec.NodeName = NodeName
		if err := r.c.Create(ctx, obj); err != nil {
			if !apierrors.IsAlreadyExists(err) && ctx.Err() == nil {
				r.log.Warn("create pod object", "pod", v.name, "error", err)
			}
			continue
		}
		r.writePodStatus(ctx, obj, v)
	}
}

func mergeLabels(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func (r *Runner) userDeleted(key types.NamespacedName, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d := r.deps[key]; d != nil {
		if p := d.pods[name]; p != nil && !p.terminating {
			r.record(d, p, "Deleted", "the Pod object was deleted")
			r.terminate(d, p)
		}
	}
}

// writePodStatus reports phase, readiness and restarts, when they changed.
func (r *Runner) writePodStatus(ctx context.Context, obj *corev1.Pod, v podView) {
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: metav1.Now()}
	}
	ctr := obj.Spec.Containers[0]
	cs := corev1.ContainerStatus{Name: ctr.Name, Image: ctr.Image, Ready: v.ready, RestartCount: v.restarts,
		Started: ptr.To(v.running)}
	phase := corev1.PodRunning
	switch {
	case v.running:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(v.started)}
	case v.lastErr != "":
		phase = corev1.PodPending
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: v.lastErr}
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}
	}
	st := corev1.PodStatus{
		Phase: phase, HostIP: "127.0.0.1", StartTime: ptr.To(metav1.NewTime(v.started)),
		Conditions: []corev1.PodCondition{
			cond(corev1.PodScheduled, true), cond(corev1.PodInitialized, true),
			cond(corev1.ContainersReady, v.ready), cond(corev1.PodReady, v.ready),
		},
		ContainerStatuses: []corev1.ContainerStatus{cs},
	}
	if sameStatus(obj.Status, st) {
		return
	}
	// Keep transition times of conditions that did not change.
	for i, c := range st.Conditions {
		for _, old := range obj.Status.Conditions {
			if old.Type == c.Type && old.Status == c.Status {
				st.Conditions[i].LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	obj.Status = st
	if err := r.c.Status().Update(ctx, obj); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
		r.log.Warn("update pod status", "pod", obj.Name, "error", err)
	}
}

func sameStatus(a, b corev1.PodStatus) bool {
	if a.Phase != b.Phase || len(a.ContainerStatuses) != 1 || len(b.ContainerStatuses) != 1 {
		return false
	}
	x, y := a.ContainerStatuses[0], b.ContainerStatuses[0]
	return x.Ready == y.Ready && x.RestartCount == y.RestartCount && (x.State.Running == nil) == (y.State.Running == nil) &&
		fmt.Sprint(x.State.Waiting) == fmt.Sprint(y.State.Waiting)
}
