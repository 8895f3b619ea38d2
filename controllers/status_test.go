package controllers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
)

// wantKstatus waits until kstatus — what Flux, Argo CD and kpt run — reads
// the live sink as want.
func wantKstatus(t *testing.T, ns, name string, want status.Status) *status.Result {
	t.Helper()
	var res *status.Result
	eventually(t, 20*time.Second, func() error {
		sink, err := get(t, &jetsinkv1.WarehouseSink{}, ns, name)
		if err != nil {
			return err
		}
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(sink)
		if err != nil {
			return err
		}
		if res, err = status.Compute(&unstructured.Unstructured{Object: m}); err != nil {
			return err
		}
		if res.Status != want {
			return fmt.Errorf("kstatus = %s (%s), want %s", res.Status, res.Message, want)
		}
		return nil
	})
	return res
}

func TestKstatusReadsTheSinkAsGitOpsToolsDo(t *testing.T) {
	ns, srv := withStream(t)
	_, secret := sinkOnS3(t, ns, srv, s3Keys)

	wantKstatus(t, ns, "events", status.InProgressStatus) // no pods yet
	markRolledOut(t, ns, "events")
	wantKstatus(t, ns, "events", status.CurrentStatus)

	// Breaking after convergence shows: the Secret is deleted.
	if err := k8s.Delete(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	res := wantKstatus(t, ns, "events", status.FailedStatus)
	t.Logf("kstatus after the Secret went: %s: %s", res.Status, res.Message)

	// A spec edit the operator has not acted on yet is InProgress, and
	// the conditions carry the generation they were computed for.
	mustCreate(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s3-creds", Namespace: ns}, StringData: s3Keys})
	markRolledOut(t, ns, "events")
	wantKstatus(t, ns, "events", status.CurrentStatus)
	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) { s.Spec.Replicas = ptr.To[int32](3) })
	wantKstatus(t, ns, "events", status.InProgressStatus)
	waitReplicas(t, ns, "events", 3) // the operator acted on the edit
	got, _ := get(t, &jetsinkv1.WarehouseSink{}, ns, "events")
	for _, c := range got.Status.Conditions {
		if c.ObservedGeneration != got.Status.ObservedGeneration {
			t.Errorf("condition %s at generation %d, status at %d", c.Type, c.ObservedGeneration, got.Status.ObservedGeneration)
		}
	}
	markRolledOut(t, ns, "events")
	wantKstatus(t, ns, "events", status.CurrentStatus)

	// A rollout the Deployment controller gave up on is Failed, not
	// Progressing for ever.
	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) { s.Spec.Replicas = ptr.To[int32](4) })
	waitReplicas(t, ns, "events", 4)
	eventually(t, 10*time.Second, func() error {
		d, err := get(t, &appsv1.Deployment{}, ns, "events")
		if err != nil {
			return err
		}
		d.Status.ObservedGeneration = d.Generation
		d.Status.Conditions = []appsv1.DeploymentCondition{{
			Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded",
			Message: `ReplicaSet "events-abc" has timed out progressing.`,
		}}
		return k8s.Status().Update(t.Context(), d)
	})
	c := wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonProgressDeadlineExceeded)
	if !strings.Contains(c.Message, "timed out progressing") {
		t.Errorf("message does not carry the Deployment's: %q", c.Message)
	}
	wantKstatus(t, ns, "events", status.FailedStatus)
}

// waitReplicas waits until the sink's Deployment asks for n workers.
func waitReplicas(t *testing.T, ns, name string, n int32) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		d, err := get(t, &appsv1.Deployment{}, ns, name)
		if err != nil {
			return err
		}
		if *d.Spec.Replicas != n {
			return fmt.Errorf("Deployment %s asks for %d replicas, want %d", name, *d.Spec.Replicas, n)
		}
		return nil
	})
}

func TestConditionsKeepTheirTransitionTimeAcrossRetries(t *testing.T) {
	ns, srv := withStream(t)
	sink, _ := sinkOnS3(t, ns, srv, map[string]string{"AWS_ACCESS_KEY_ID": s3test.AccessKey, "AWS_SECRET_ACCESS_KEY": "wrong"})
	ready := wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionFalse, jetsinkv1.ReasonS3AccessDenied)
	stalledSince := wantCondition(t, ns, "events", jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonS3AccessDenied)

	// The problem persists through several retries (1 s, 2 s, 4 s apart).
	key := client.ObjectKeyFromObject(sink)
	n := reconciles.of(key)
	eventually(t, 30*time.Second, func() error {
		if got := reconciles.of(key) - n; got < 3 {
			return fmt.Errorf("%d retries so far", got)
		}
		return nil
	})
	for typ, was := range map[string]*metav1.Condition{jetsinkv1.ConditionReady: ready, jetsinkv1.ConditionStalled: stalledSince} {
		now, err := condition(t, ns, "events", typ)
		if err != nil {
			t.Fatal(err)
		}
		if !now.LastTransitionTime.Equal(&was.LastTransitionTime) {
			t.Errorf("%s lastTransitionTime moved from %s to %s with no transition", typ, was.LastTransitionTime, now.LastTransitionTime)
		}
	}
	if n := len(eventsOf(t, ns, jetsinkv1.ReasonS3AccessDenied)); n != 1 {
		t.Errorf("%d S3AccessDenied Events for one problem, want 1 (aggregated)", n)
	}
}

func TestOthersChangesToTheWorkersSurvive(t *testing.T) {
	ns, srv := withStream(t)
	mustCreate(t, newSink(ns, srv.ClientURL()))
	var dep *appsv1.Deployment
	eventually(t, 20*time.Second, func() (err error) {
		dep, err = get(t, &appsv1.Deployment{}, ns, "events")
		return err
	})
	// What `kubectl rollout restart` does, as its own field manager.
	patch := client.MergeFrom(dep.DeepCopy())
	if dep.Spec.Template.Annotations == nil {
		dep.Spec.Template.Annotations = map[string]string{}
	}
	dep.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] = "2026-12-02T21:00:00Z"
	if err := k8s.Patch(t.Context(), dep, patch, client.FieldOwner("kubectl-rollout")); err != nil {
		t.Fatal(err)
	}
	// A spec change makes the operator apply the Deployment again.
	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) {
		s.Spec.ShutdownTimeout = &metav1.Duration{Duration: 45 * time.Second}
	})
	eventually(t, 20*time.Second, func() error {
		d, err := get(t, &appsv1.Deployment{}, ns, "events")
		if err != nil {
			return err
		}
		if *d.Spec.Template.Spec.TerminationGracePeriodSeconds != 45+workload.GracePeriodMargin {
			return fmt.Errorf("grace period = %d, not applied yet", *d.Spec.Template.Spec.TerminationGracePeriodSeconds)
		}
		if d.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] == "" {
			return fmt.Errorf("the rollout-restart annotation was wiped: %v", d.Spec.Template.Annotations)
		}
		return nil
	})
}

func TestSecretMetadataChangesDoNotRollTheWorkers(t *testing.T) {
	ns, srv := withStream(t)
	sink, secret := sinkOnS3(t, ns, srv, s3Keys)
	template := func() map[string]string {
		t.Helper()
		var ann map[string]string
		eventually(t, 20*time.Second, func() error {
			d, err := get(t, &appsv1.Deployment{}, ns, "events")
			if err != nil {
				return err
			}
			ann = d.Spec.Template.Annotations
			return nil
		})
		return ann
	}
	before := template()
	key := client.ObjectKeyFromObject(sink)

	// External Secrets, Reflector and friends label and annotate Secrets.
	n := reconciles.of(key)
	if err := k8s.Get(t.Context(), client.ObjectKeyFromObject(secret), secret); err != nil {
		t.Fatal(err)
	}
	secret.Labels = map[string]string{"reflector/synced": "true"}
	if err := k8s.Update(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if reconciles.of(key) == n {
			return fmt.Errorf("the Secret change did not wake the sink")
		}
		return nil
	})
	time.Sleep(time.Second)
	if after := template(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a label on the Secret changed the pod template (a rollout of every worker): %v → %v", before, after)
	}

	// A new secret key value rolls them: env from a Secret is read at start.
	secret.StringData = map[string]string{"AWS_SECRET_ACCESS_KEY": s3test.SecretKey + "-rotated"}
	if err := k8s.Update(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		if after := template(); fmt.Sprint(after) == fmt.Sprint(before) {
			return fmt.Errorf("a rotated key did not change the pod template")
		}
		return nil
	})
}

// 0.1 wrote the Deployment with Update (field manager "manager"): what it
// set and the sink no longer asks for goes at the next apply, instead of
// staying for ever under the old manager's name.
func TestFieldsTheEarlierOperatorSetAreTakenOver(t *testing.T) {
	ns, srv := withStream(t)
	mustCreate(t, newSink(ns, srv.ClientURL()))
	var dep *appsv1.Deployment
	eventually(t, 20*time.Second, func() (err error) {
		dep, err = get(t, &appsv1.Deployment{}, ns, "events")
		return err
	})
	if dep.Spec.Template.Annotations == nil {
		dep.Spec.Template.Annotations = map[string]string{}
	}
	dep.Spec.Template.Annotations["jetsink.dev/credentials-version"] = "s3-creds@41" // what 0.1 rendered
	if err := k8s.Update(t.Context(), dep, client.FieldOwner("manager")); err != nil {
		t.Fatal(err)
	}
	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) {
		s.Spec.ShutdownTimeout = &metav1.Duration{Duration: 45 * time.Second}
	})
	eventually(t, 20*time.Second, func() error {
		d, err := get(t, &appsv1.Deployment{}, ns, "events")
		if err != nil {
			return err
		}
		if v, ok := d.Spec.Template.Annotations["jetsink.dev/credentials-version"]; ok {
			return fmt.Errorf("0.1's pod annotation is still there (%q)", v)
		}
		for _, f := range d.ManagedFields {
			if f.Manager == "manager" {
				return fmt.Errorf("fields still owned by 0.1's manager")
			}
		}
		return nil
	})
}
