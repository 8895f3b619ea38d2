package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
)

// reasonOOMKilled is the kubelet's reason for a container the kernel killed
// for going over its memory limit.
const reasonOOMKilled = "OOMKilled"

// workerHealth is what a sink's worker pods say about themselves: the
// Deployment only counts available pods, the pods' container statuses say
// why the others are not.
type workerHealth struct {
	// last is the most recent abnormal termination of any container of
	// the pods (status.lastWorkerFailure), nil when there is none.
	last *jetsinkv1.WorkerFailure
	// lastMessage describes last, for its Event.
	lastMessage string
	// down is the most recent failure that keeps a worker unavailable now
	// (its container is not ready since), nil when none does; its message
	// names the pod and what to change.
	down *problem
	// downPod is the pod of down.
	downPod string
}

// downReason is the Ready reason while a worker is down, "" when none is.
func (h *workerHealth) downReason() string {
	if h == nil || h.down == nil {
		return ""
	}
	return h.down.Reason
}

// workerHealth reads the sink's worker pods from the cache (which holds
// only worker pods, see CacheOptions) and inspects them.
func (r *WarehouseSinkReconciler) workerHealth(ctx context.Context, sink *jetsinkv1.WarehouseSink) (*workerHealth, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(sink.Namespace), client.MatchingLabels(workload.SelectorLabels(sink))); err != nil {
		return nil, fmt.Errorf("list the worker pods: %w", err)
	}
	return inspectWorkers(sink, pods.Items), nil
}

// termination is an abnormal termination of a worker container.
type termination struct {
	failure jetsinkv1.WorkerFailure
	// down: it is the container's latest termination and the container
	// has not been ready since (terminated, in CrashLoopBackOff, or
	// restarted and not ready yet).
	down bool
	// memoryLimit of the container, nil when it has none.
	memoryLimit *resource.Quantity
}

// inspectWorkers finds the pods' most recent abnormal termination and the
// most recent one that still keeps a worker down. Pure, for table tests.
func inspectWorkers(sink *jetsinkv1.WarehouseSink, pods []corev1.Pod) *workerHealth {
	var last, down *termination
	for i := range pods {
		for _, t := range terminations(&pods[i]) {
			if t.newerThan(last) {
				last = t
			}
			if t.down && t.newerThan(down) {
				down = t
			}
		}
	}
	h := &workerHealth{}
	if last != nil {
		h.last = &last.failure
		h.lastMessage = failureMessage(sink, last)
	}
	if down != nil {
		h.down = retrying(failureReason(&down.failure), "%s", failureMessage(sink, down))
		h.downPod = down.failure.Pod
	}
	return h
}

// terminations are the abnormal terminations the pod's container statuses
// hold: each container's current state and the one before it.
func terminations(pod *corev1.Pod) []*termination {
	var out []*termination
	for _, cs := range pod.Status.ContainerStatuses {
		limit := memoryLimit(pod, cs.Name)
		for i, t := range []*corev1.ContainerStateTerminated{cs.State.Terminated, cs.LastTerminationState.Terminated} {
			if !abnormal(t) {
				continue
			}
			// The last state counts as the latest only while the
			// container has not terminated again since.
			latest := i == 0 || cs.State.Terminated == nil
			out = append(out, &termination{
				failure: jetsinkv1.WorkerFailure{
					Pod: pod.Name, Container: cs.Name, Reason: t.Reason, ExitCode: t.ExitCode,
					Message: t.Message, FinishedAt: t.FinishedAt, Restarts: cs.RestartCount,
				},
				down:        latest && !cs.Ready,
				memoryLimit: limit,
			})
		}
	}
	return out
}

// abnormal tells a failure from a container that finished its work (a
// drain that exited 0).
func abnormal(t *corev1.ContainerStateTerminated) bool {
	return t != nil && (t.ExitCode != 0 || t.Reason == reasonOOMKilled)
}

// newerThan orders terminations by time, then by pod and container so the
// choice between two of the same second does not flap.
func (t *termination) newerThan(o *termination) bool {
	if o == nil {
		return true
	}
	a, b := t.failure, o.failure
	if !a.FinishedAt.Equal(&b.FinishedAt) {
		return b.FinishedAt.Before(&a.FinishedAt)
	}
	if a.Pod != b.Pod {
		return a.Pod < b.Pod
	}
	return a.Container < b.Container
}

// memoryLimit is the memory limit of the pod's container, as the pod has it
// (a LimitRange may have set one the sink does not name).
func memoryLimit(pod *corev1.Pod, container string) *resource.Quantity {
	for _, c := range pod.Spec.Containers {
		if c.Name == container {
			if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
				return &q
			}
		}
	}
	return nil
}

// failureReason is the Ready reason and Event reason of a failure.
func failureReason(f *jetsinkv1.WorkerFailure) string {
	if f.Reason == reasonOOMKilled {
		return jetsinkv1.ReasonWorkerOOMKilled
	}
	return jetsinkv1.ReasonWorkerCrashed
}

// failureMessage says which container failed, how, how often, and what to
// change.
func failureMessage(sink *jetsinkv1.WarehouseSink, t *termination) string {
	f := t.failure
	at := f.FinishedAt.UTC().Format(time.RFC3339)
	if f.Reason != reasonOOMKilled {
		reason := f.Reason
		if reason == "" {
			reason = "terminated"
		}
		if f.Message != "" {
			return fmt.Sprintf("pod %s container %s exited with code %d (%s) at %s, restart count %d: %s",
				f.Pod, f.Container, f.ExitCode, reason, at, f.Restarts, f.Message)
		}
		return fmt.Sprintf("pod %s container %s exited with code %d (%s) at %s, restart count %d; "+
			"its log says why: kubectl logs %s -c %s --previous",
			f.Pod, f.Container, f.ExitCode, reason, at, f.Restarts, f.Pod, f.Container)
	}
	what := fmt.Sprintf("pod %s container %s was OOMKilled (exit code %d) at %s, restart count %d",
		f.Pod, f.Container, f.ExitCode, at, f.Restarts)
	buffered := resource.NewQuantity(workload.WorkerConfig(sink).MaxBufferedBytes, resource.BinarySI).String()
	if q := sink.Spec.Batch.MaxBufferedBytes; q != nil {
		buffered = q.String()
	}
	if t.memoryLimit == nil {
		return what + fmt.Sprintf("; it has no memory limit, so the node ran out of memory (batch.maxBufferedBytes %s): "+
			"set spec.resources.limits.memory and requests.memory above batch.maxBufferedBytes plus room for encoding, "+
			"or lower batch.maxBufferedBytes", buffered)
	}
	return what + fmt.Sprintf("; memory limit %s, batch.maxBufferedBytes %s: "+
		"raise spec.resources.limits.memory above batch.maxBufferedBytes plus room for encoding, or lower batch.maxBufferedBytes",
		t.memoryLimit.String(), buffered)
}

// sameFailure tells whether two observations are of one termination. The
// restart count is no part of it when the time is known: the kubelet
// restarts a container after it recorded its termination, so one failure is
// first seen with the count before the restart, then with the count after.
func sameFailure(a, b *jetsinkv1.WorkerFailure) bool {
	if a.Pod != b.Pod || a.Container != b.Container || !a.FinishedAt.Equal(&b.FinishedAt) {
		return false
	}
	return !a.FinishedAt.IsZero() || a.Restarts == b.Restarts
}
