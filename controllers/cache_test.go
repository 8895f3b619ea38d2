package controllers

import (
	"maps"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
)

// lastApplied is what `kubectl apply` leaves on a Secret it created: the
// whole object, its data included.
const lastApplied = `{"apiVersion":"v1","data":{"AWS_SECRET_ACCESS_KEY":"c2VjcmV0"},"kind":"Secret","metadata":{"name":"s3-creds","namespace":"demo"}}`

func appliedMeta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: name, Namespace: "demo",
		Labels: map[string]string{"team": "data"},
		Annotations: map[string]string{
			corev1.LastAppliedConfigAnnotation: lastApplied,
			"jetsink.dev/note":                 "kept on sinks",
		},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl-client-side-apply", Operation: metav1.ManagedFieldsOperationUpdate}},
	}
}

// TestCacheTransformStripsSecretMetadata runs the cache's transform on what
// the informers hand it: a metadata-only Secret (as builder.OnlyMetadata
// caches it) keeps no annotation, so no copy of its data; other objects
// keep theirs; nothing keeps managedFields.
func TestCacheTransformStripsSecretMetadata(t *testing.T) {
	transform := CacheOptions(nil).DefaultTransform
	if transform == nil {
		t.Fatal("CacheOptions sets no DefaultTransform")
	}

	secretMeta := &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: appliedMeta("s3-creds"),
	}
	typedSecret := &corev1.Secret{ObjectMeta: appliedMeta("nats-creds"), Data: map[string][]byte{"token": []byte("t")}}
	sink := &jetsinkv1.WarehouseSink{ObjectMeta: appliedMeta("events")}
	configMapMeta := &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: appliedMeta("settings"),
	}

	for _, tc := range []struct {
		name            string
		obj             metav1.Object
		keepAnnotations bool
	}{
		{"metadata-only Secret", secretMeta, false},
		{"typed Secret", typedSecret, false},
		{"WarehouseSink", sink, true},
		{"metadata-only ConfigMap", configMapMeta, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := transform(tc.obj)
			if err != nil {
				t.Fatal(err)
			}
			o := out.(metav1.Object)
			if tc.keepAnnotations {
				if want := appliedMeta("").Annotations; !maps.Equal(o.GetAnnotations(), want) {
					t.Errorf("annotations %v, want them kept: %v", o.GetAnnotations(), want)
				}
			} else if len(o.GetAnnotations()) != 0 {
				t.Errorf("cached Secret keeps annotations %v: the last-applied configuration holds its data", slices.Collect(maps.Keys(o.GetAnnotations())))
			}
			if o.GetManagedFields() != nil {
				t.Errorf("managedFields kept: %v", o.GetManagedFields())
			}
			if o.GetName() == "" || o.GetNamespace() != "demo" || o.GetLabels()["team"] != "data" {
				t.Errorf("name, namespace or labels lost: %s/%s %v", o.GetNamespace(), o.GetName(), o.GetLabels())
			}
			// Informers may hand an object over twice (a relist): the
			// transform must be idempotent.
			again, err := transform(out)
			if err != nil || again.(metav1.Object).GetName() != o.GetName() {
				t.Errorf("second pass: %v %v", again, err)
			}
		})
	}
}

func TestCacheOptionsNamespaces(t *testing.T) {
	if ns := CacheOptions(nil).DefaultNamespaces; ns != nil {
		t.Errorf("no namespaces: DefaultNamespaces %v, want nil (every namespace)", ns)
	}
	got := slices.Sorted(maps.Keys(CacheOptions([]string{"analytics", "", "staging"}).DefaultNamespaces))
	if want := []string{"analytics", "staging"}; !slices.Equal(got, want) {
		t.Errorf("DefaultNamespaces %v, want %v (an empty name would mean every namespace)", got, want)
	}
	if ns := CacheOptions([]string{""}).DefaultNamespaces; ns != nil {
		t.Errorf("only an empty name: DefaultNamespaces %v, want nil", ns)
	}
}
