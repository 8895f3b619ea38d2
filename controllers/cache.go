package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/jetsink/jetsink/controllers/workload"
)

// CacheOptions are the manager's cache options: objects of the namespaces
// listed (all namespaces when there are none; empty names are skipped),
// stripped of what the operator never reads before they are stored.
//
// Of the pods, only the sink workers (labelled app.kubernetes.io/name:
// jetsink-sinkworker) are listed and watched: the operator reads their
// container statuses, and a cluster's other pods are none of its business
// nor worth its memory. The label selector is per type (ByObject) and leaves
// the pods' namespaces to DefaultNamespaces: a ByObject without Namespaces
// inherits them, each namespace with the selector (an empty, non-nil
// Namespaces map would instead mean every namespace). A cached worker pod
// keeps of its spec only each container's name and resources (the memory
// limit a failure message names); its env, which spec.env fills, is not
// held in memory.
//
// The operator caches only the metadata of Secrets (builder.OnlyMetadata),
// yet that metadata can still carry a Secret's data: `kubectl apply` writes
// the whole object, data included, into the
// kubectl.kubernetes.io/last-applied-configuration annotation, and
// managedFields can name every key. So every cached object loses its
// managedFields (nothing here reads them; they are often the larger half of
// an object) and every cached Secret loses all its annotations: the
// controller only needs a Secret's name and namespace to find the sinks
// that use it, and reads the Secret itself through the APIReader.
func CacheOptions(namespaces []string) cache.Options {
	opts := cache.Options{
		DefaultTransform: stripCachedObject,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Label: labels.SelectorFromSet(labels.Set{workload.LabelName: workload.WorkerName})},
		},
	}
	for _, ns := range namespaces {
		// An empty name would be cache.AllNamespaces: never widen a list
		// of namespaces to the whole cluster by a stray comma.
		if ns == "" {
			continue
		}
		if opts.DefaultNamespaces == nil {
			opts.DefaultNamespaces = map[string]cache.Config{}
		}
		opts.DefaultNamespaces[ns] = cache.Config{}
	}
	return opts
}

// stripManagedFields is controller-runtime's own transform, kept as a
// value so every object goes through one call.
var stripManagedFields = cache.TransformStripManagedFields()

// stripCachedObject is the cache's transform. Informers run it on each
// object before storing it; it must be idempotent and quick. A metadata-only
// Secret arrives as a *metav1.PartialObjectMetadata whose TypeMeta the
// cache has set to v1 Secret (its list and watch fix up the GVK before the
// transform runs), so it is recognised by kind, not by Go type.
func stripCachedObject(in any) (any, error) {
	out, err := stripManagedFields(in)
	if err != nil {
		return out, err
	}
	if isSecret(out) {
		if obj, err := meta.Accessor(out); err == nil && obj.GetAnnotations() != nil {
			obj.SetAnnotations(nil)
		}
	}
	if pod, ok := out.(*corev1.Pod); ok {
		stripPodSpec(pod)
	}
	return out, nil
}

// stripPodSpec keeps each container's name and resources of a pod's spec.
func stripPodSpec(pod *corev1.Pod) {
	containers := make([]corev1.Container, len(pod.Spec.Containers))
	for i, c := range pod.Spec.Containers {
		containers[i] = corev1.Container{Name: c.Name, Resources: c.Resources}
	}
	pod.Spec = corev1.PodSpec{Containers: containers}
}

// isSecret tells whether a cached object is a core/v1 Secret, typed or
// metadata-only.
func isSecret(o any) bool {
	switch o := o.(type) {
	case *corev1.Secret:
		return true
	case *metav1.PartialObjectMetadata:
		gvk := o.GroupVersionKind()
		return gvk.Group == "" && gvk.Kind == "Secret"
	}
	return false
}
