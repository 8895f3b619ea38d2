package controllers

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
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

// TestCacheHoldsOnlyWorkerPodsOfTheWatchedNamespaces runs a cache with the
// manager's options against the API server: of the pods it lists only the
// sink workers of the watched namespaces (the pods' label selector must
// not widen the namespaces), each without its env.
func TestCacheHoldsOnlyWorkerPodsOfTheWatchedNamespaces(t *testing.T) {
	watched, unwatched := namespace(t), namespace(t)
	worker := map[string]string{workload.LabelName: workload.WorkerName, workload.LabelInstance: "events"}
	pod := func(ns, name string, labels map[string]string) {
		mustCreate(t, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "sinkworker", Image: "jetsink:test",
				Env:       []corev1.EnvVar{{Name: "HTTPS_PROXY", Value: "http://user:secret@proxy:3128"}},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}},
			}}},
		})
	}
	pod(watched, "worker", worker)
	pod(watched, "web", map[string]string{workload.LabelName: "web", workload.LabelInstance: "events"})
	pod(unwatched, "worker", worker)

	c, err := cache.New(restConfig, func() cache.Options {
		opts := CacheOptions([]string{watched})
		opts.Scheme = k8s.Scheme()
		return opts
	}())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(t.Context()) }()
	var pods corev1.PodList
	eventually(t, 10*time.Second, func() error {
		if err := c.List(t.Context(), &pods); err != nil {
			return err
		}
		if len(pods.Items) == 0 {
			return fmt.Errorf("no pods cached yet")
		}
		return nil
	})
	var got []string
	for _, p := range pods.Items {
		got = append(got, p.Namespace+"/"+p.Name)
	}
	if want := []string{watched + "/worker"}; !slices.Equal(got, want) {
		t.Fatalf("cached pods %v, want %v", got, want)
	}
	p := pods.Items[0]
	if c := p.Spec.Containers; len(c) != 1 || c[0].Name != "sinkworker" || c[0].Env != nil || c[0].Image != "" ||
		c[0].Resources.Limits.Memory().String() != "128Mi" {
		t.Errorf("cached pod spec %+v, want its containers' names and resources only", p.Spec)
	}
	if p.ManagedFields != nil {
		t.Errorf("cached pod keeps managedFields")
	}
}
