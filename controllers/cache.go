package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// CacheOptions are the manager's cache options: objects of the namespaces
// listed (all namespaces when there are none; empty names are skipped),
// stripped of what the operator never reads before they are stored.
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
	opts := cache.Options{DefaultTransform: stripCachedObject}
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
	return out, nil
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
