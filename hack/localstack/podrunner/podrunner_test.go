package podrunner_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/hack/localstack/podrunner"
	"github.com/jetsink/jetsink/hack/localstack/stack"
	"github.com/jetsink/jetsink/internal/reporoot"
)

// The runner keeps the kubelet's contract with a process that ignores
// SIGTERM: SIGKILL exactly after the pod's grace period, not before. It also
// resolves secretKeyRefs, restarts a crashed process, writes the
// Deployment's status and garbage-collects the children of a deleted sink.
// No operator runs here: the test writes the Deployment itself.
func TestRunnerKeepsTheKubeletContract(t *testing.T) {
	root, err := reporoot.Find()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "bin", "kube-apiserver")); err != nil {
		t.Fatal("bin/kube-apiserver missing: run `make tools`")
	}
	logf.SetLogger(logr.Discard())
	env := &envtest.Environment{
		BinaryAssetsDirectory: filepath.Join(root, "bin"),
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	// Stop also after a failed Start: a refused CRD fails it with etcd and
	// kube-apiserver already running.
	t.Cleanup(func() { _ = env.Stop() })
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: stack.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	logDir := t.TempDir()
	r := podrunner.New(podrunner.Options{Client: c, LogDir: logDir, Interval: 100 * time.Millisecond})
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(rctx) }()
	t.Cleanup(func() { stop(); <-done })

	sink := &jetsinkv1.WarehouseSink{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "stubborn"},
		Spec: jetsinkv1.WarehouseSinkSpec{
			Source:      jetsinkv1.SourceSpec{URL: "nats://127.0.0.1:1", Stream: "S"},
			Destination: jetsinkv1.DestinationSpec{Bucket: "lake"},
		},
	}
	if err := c.Create(ctx, sink); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "creds"},
		StringData: map[string]string{"token": "s3cr3t"}}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "stubborn"}
	// A container that writes its secret env to a file and ignores SIGTERM.
	script := `echo "$TOKEN" > "$TMPDIR/token"; trap '' TERM; while true; do sleep 0.05; done`
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "stubborn"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](2),
					Containers: []corev1.Container{{
						Name: "w", Image: "x", Command: []string{"sh", "-c", script},
						Env: []corev1.EnvVar{
							{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
								LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "token"}}},
							{Name: "ABSENT", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
								LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k", Optional: ptr.To(true)}}},
						},
					}},
				},
			},
		},
	}
	dep.OwnerReferences = []metav1.OwnerReference{{APIVersion: jetsinkv1.GroupVersion.String(), Kind: "WarehouseSink",
		Name: sink.Name, UID: sink.UID, Controller: ptr.To(true)}}
	if err := c.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: "default", Name: "stubborn"}

	live := func() []podrunner.PodInfo {
		var out []podrunner.PodInfo
		for _, p := range r.Pods(key) {
			if p.PID != 0 && !p.Terminating {
				out = append(out, p)
			}
		}
		return out
	}
	waitFor(t, 10*time.Second, "2 processes and the Deployment's status", func() (bool, string) {
		d := &appsv1.Deployment{}
		if err := c.Get(ctx, key, d); err != nil {
			return false, err.Error()
		}
		return len(live()) == 2 && d.Status.Replicas == 2 && d.Status.UpdatedReplicas == 2 &&
			d.Status.ReadyReplicas == 0 && d.Status.ObservedGeneration == d.Generation, fmt.Sprintf("%+v", d.Status)
	})
	for _, p := range live() {
		waitFor(t, 5*time.Second, "the secret in the process's env", func() (bool, string) {
			b, _ := os.ReadFile(filepath.Join(logDir, "tmp", p.Name, "token"))
			return strings.TrimSpace(string(b)) == "s3cr3t", string(b)
		})
	}

	// A crashed process is restarted.
	crashed, err := r.Kill(key, func(ps []podrunner.PodInfo) string { return ps[0].Name })
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the crashed pod restarted", func() (bool, string) {
		for _, p := range live() {
			if p.Name == crashed && p.Restarts == 1 {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", r.Pods(key))
	})

	// Each process is a Pod object, Running, bound to the runner's node.
	waitFor(t, 10*time.Second, "2 Pod objects, Running", func() (bool, string) {
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace("default"), client.MatchingLabels(labels)); err != nil {
			return false, err.Error()
		}
		n := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName == podrunner.NodeName && p.DeletionTimestamp.IsZero() {
				n++
			}
		}
		return n == 2, fmt.Sprintf("%d pods", len(pods.Items))
	})
	// Deleting a Pod object stops its process; a replacement starts.
	victim := live()[0].Name
	if err := c.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: victim}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the deleted pod replaced and gone", func() (bool, string) {
		ps := r.Pods(key)
		for _, p := range ps {
			if p.Name == victim {
				return false, fmt.Sprintf("%+v", ps)
			}
		}
		return len(live()) == 2, fmt.Sprintf("%+v", ps)
	})

	// Scale to 1: the pod that ignores SIGTERM is SIGKILLed after its 2s.
	if err := c.Patch(ctx, dep, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":1}}`))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "one pod left", func() (bool, string) {
		return len(r.Pods(key)) == 1, fmt.Sprintf("%+v", r.Pods(key))
	})
	var termAt, exitAt time.Time
	var exitDetail string
	for _, ev := range r.Events() {
		switch ev.Type {
		case "Terminating":
			termAt = ev.Time
		case "Exited":
			if !termAt.IsZero() {
				exitAt, exitDetail = ev.Time, ev.Detail
			}
		}
	}
	if took := exitAt.Sub(termAt); took < 2*time.Second || took > 3*time.Second {
		t.Errorf("SIGTERM→exit took %s, want the 2s grace period (+ a tick)", took)
	}
	if !strings.Contains(exitDetail, "SIGKILL after the grace period") {
		t.Errorf("exit %q: want a SIGKILL after the grace period", exitDetail)
	}

	// Deleting the sink: no garbage collector in envtest, the runner
	// deletes its Deployment and stops the pods.
	if err := c.Delete(ctx, sink); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the Deployment gone and no pods", func() (bool, string) {
		err := c.Get(ctx, key, &appsv1.Deployment{})
		return apierrors.IsNotFound(err) && len(r.Pods(key)) == 0, fmt.Sprintf("get: %v, pods %+v", err, r.Pods(key))
	})
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
