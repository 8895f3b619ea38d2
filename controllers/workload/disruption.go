package workload

import (
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
)

// PodDisruptionBudget returns the budget that keeps a node drain from
// evicting more than spec.podDisruptionBudget.maxUnavailable workers at
// once, or nil when the sink asks for none or it would bound nothing (a
// number of pods at least the sink's workers: one worker and the default
// maxUnavailable of 1), which spares an object per sink in a large fleet. A worker evicted by a drain
// gets SIGTERM and its grace period like any other, so the budget bounds
// how much of the sink drains at a time, not whether events are kept.
func PodDisruptionBudget(sink *jetsinkv1.WarehouseSink) *policyv1.PodDisruptionBudget {
	spec := sink.Spec.PodDisruptionBudget
	if !ptr.Deref(spec.Enabled, true) {
		return nil
	}
	maxUnavailable := ptr.Deref(spec.MaxUnavailable, intstr.FromInt32(1))
	if maxUnavailable.Type == intstr.Int && maxUnavailable.IntVal >= Replicas(sink) {
		return nil
	}
	p := &policyv1.PodDisruptionBudget{
		TypeMeta: metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      sink.Name,
			Namespace: sink.Namespace,
			Labels:    Labels(sink),
		},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: &maxUnavailable,
			Selector:       &metav1.LabelSelector{MatchLabels: SelectorLabels(sink)},
			// A worker that is not Ready (stuck on a dead NATS, say) may
			// always be evicted: holding it would block the drain for
			// nothing it could write.
			UnhealthyPodEvictionPolicy: ptr.To(policyv1.AlwaysAllow),
		},
	}
	p.Annotations = map[string]string{AnnotationSpecHash: specHash(p.Spec)}
	return p
}
