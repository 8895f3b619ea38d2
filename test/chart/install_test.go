package chart

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers"
	"github.com/jetsink/jetsink/controllers/workload"
	"github.com/jetsink/jetsink/internal/testutil/natstest"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
)

// One API server for the package, started by the first test that needs it.
var (
	envOnce    sync.Once
	testEnv    *envtest.Environment
	envCfg     *rest.Config
	kubeconfig string // an admin kubeconfig for helm and kubectl
	envDir     string
	envErr     error
)

func startEnv(t testing.TB) *rest.Config {
	t.Helper()
	root := repoRoot(t)
	envOnce.Do(func() {
		if os.Getenv("KUBEBUILDER_ASSETS") == "" {
			os.Setenv("KUBEBUILDER_ASSETS", filepath.Join(root, "bin"))
		}
		assets := os.Getenv("KUBEBUILDER_ASSETS")
		for _, b := range []string{"kube-apiserver", "etcd"} {
			if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
				envErr = fmt.Errorf("%s not found in KUBEBUILDER_ASSETS=%s: run `make tools` first", b, assets)
				return
			}
		}
		testEnv = &envtest.Environment{}
		if envCfg, envErr = testEnv.Start(); envErr != nil {
			return
		}
		admin, err := testEnv.AddUser(envtest.User{Name: "jetsink-test-admin", Groups: []string{"system:masters"}}, nil)
		if err != nil {
			envErr = err
			return
		}
		kc, err := admin.KubeConfig()
		if err != nil {
			envErr = err
			return
		}
		if envDir, envErr = os.MkdirTemp("", "jetsink-chart-env-"); envErr != nil {
			return
		}
		kubeconfig = filepath.Join(envDir, "kubeconfig")
		envErr = os.WriteFile(kubeconfig, kc, 0o600)
	})
	if envErr != nil {
		t.Fatalf("envtest: %v", envErr)
	}
	return envCfg
}

func stopEnv() {
	if testEnv != nil {
		_ = testEnv.Stop()
	}
	if envDir != "" {
		os.RemoveAll(envDir)
	}
}

const (
	releaseNS = "jetsink-system"
	sinkNS    = "demo"
)

// TestInstallOnACluster runs the README's "Install on a cluster" steps
// against a real API server, in order, and checks what each one promises.
// envtest runs no pods, garbage collector or Deployment controller: the
// manager itself runs in the test, under the chart's ServiceAccount.
func TestInstallOnACluster(t *testing.T) {
	cfg := startEnv(t)
	ctx := t.Context()
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	// helm and kubectl run as the admin user; t is the step's test.
	helm := func(t *testing.T, args ...string) string {
		t.Helper()
		return run(t, tool(t, "helm"), append(args, "--kubeconfig", kubeconfig)...)
	}
	kubectl := func(t *testing.T, args ...string) string {
		t.Helper()
		return run(t, tool(t, "kubectl"), append(args, "--kubeconfig", kubeconfig)...)
	}
	chart := chartDir(t)
	root := repoRoot(t)
	nats := natstest.Start(t)
	nats.CreateStream(t, "EVENTS", "events.>")
	// The sample targets AWS; the test points it at a real S3 server on
	// loopback (the controller checks the bucket with the sink's keys).
	s3 := s3test.Start(t)
	s3.CreateBucket(t, "lake")
	// pointAtTestServers re-creates the sample sink with the test servers'
	// addresses: source.url is immutable, so this is what a user does too.
	pointAtTestServers := func(t *testing.T, ns string) {
		t.Helper()
		sample := getSink(t, c, ns, "events")
		if err := c.Delete(ctx, sample); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the sample sink is gone", func() error {
			err := c.Get(ctx, client.ObjectKeyFromObject(sample), &jetsinkv1.WarehouseSink{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (%v)", err)
		})
		sink := &jetsinkv1.WarehouseSink{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sample.Name, Labels: sample.Labels},
			Spec:       sample.Spec,
		}
		sink.Spec.Source.URL = nats.ClientURL()
		sink.Spec.Destination.Endpoint = s3.URL
		sink.Spec.Destination.ForcePathStyle = true
		if err := c.Create(ctx, sink); err != nil {
			t.Fatal(err)
		}
		kubectl(t, "patch", "secret", "s3-creds", "--namespace", ns, "--type=merge", "-p", fmt.Sprintf(
			`{"stringData":{"AWS_ACCESS_KEY_ID":%q,"AWS_SECRET_ACCESS_KEY":%q}}`, s3test.AccessKey, s3test.SecretKey))
	}

	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	step("helm install", func(t *testing.T) {
		out := helm(t, "install", "jetsink", chart, "--namespace", releaseNS, "--create-namespace", "--wait=false")
		// NOTES.txt walks the user to a first sink.
		for _, want := range []string{"kind: WarehouseSink", "kubectl get sinks", "create secret generic s3-creds",
			"--clusterrole=jetsink-metrics-reader"} {
			if !strings.Contains(out, want) {
				t.Errorf("helm install notes lack %q:\n%s", want, out)
			}
		}
		waitEstablished(t, c)
		dep := &appsv1.Deployment{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: "jetsink"}, dep); err != nil {
			t.Fatalf("manager Deployment: %v", err)
		}
	})

	step("kubectl apply the sample", func(t *testing.T) {
		kubectl(t, "create", "namespace", sinkNS)
		kubectl(t, "apply", "--namespace", sinkNS, "-k", filepath.Join(root, "config", "samples"))
		sink := getSink(t, c, sinkNS, "events")
		if *sink.Spec.Replicas != 2 || sink.Spec.Source.Stream != "EVENTS" || sink.Spec.Destination.Bucket != "lake" {
			t.Errorf("stored sample: %+v", sink.Spec)
		}
		if out := kubectl(t, "describe", "sink", "events", "--namespace", sinkNS); !strings.Contains(out, "WarehouseSink") || !strings.Contains(out, "EVENTS") {
			t.Errorf("kubectl describe sink:\n%s", out)
		}
		out := kubectl(t, "get", "sinks", "--namespace", sinkNS)
		for _, want := range []string{"STREAM", "BUCKET", "LAG", "events", "EVENTS", "lake"} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl get sinks lacks %q:\n%s", want, out)
			}
		}
		// The schema refuses a bad spec with a message naming the field.
		bad := `{"apiVersion":"jetsink.dev/v1alpha1","kind":"WarehouseSink","metadata":{"name":"bad"},` +
			`"spec":{"source":{"url":"nats://x:4222","stream":"EVENTS","ackWait":"10s"},"destination":{"bucket":"lake"},"batch":{"maxAge":"60s"}}}`
		if out, err := tryRunStdin(bad, tool(t, "kubectl"), "apply", "--namespace", sinkNS, "-f", "-", "--kubeconfig", kubeconfig); err == nil ||
			!strings.Contains(err.Error(), "ackWait") {
			t.Errorf("a sink with ackWait < batch.maxAge was not refused by the schema: %v %s", err, out)
		}
	})

	step("scale the sink", func(t *testing.T) {
		kubectl(t, "scale", "sink/events", "--replicas=3", "--namespace", sinkNS)
		if got := *getSink(t, c, sinkNS, "events").Spec.Replicas; got != 3 {
			t.Errorf("after kubectl scale: spec.replicas %d, want 3", got)
		}
		kubectl(t, "patch", "sink", "events", "--namespace", sinkNS, "--type=merge", "-p", `{"spec":{"replicas":1}}`)
		if got := *getSink(t, c, sinkNS, "events").Spec.Replicas; got != 1 {
			t.Errorf("after editing the sink: spec.replicas %d, want 1", got)
		}
	})

	step("manager runs under the chart's ServiceAccount", func(t *testing.T) {
		pointAtTestServers(t, sinkNS)
		sa := serviceAccountOf(t, c, releaseNS, "jetsink")
		mgr := runManagerAs(t, cfg, releaseNS, sa, deploymentArgs(t, c, releaseNS, "jetsink"))
		assertReconciled(t, c, nats, sinkNS, "events", "jetsink_"+sinkNS+"_events")
		assertSecretCacheStripped(t, c, mgr, sinkNS, "s3-creds")
		assertMetricsAuth(t, c, mgr, releaseNS, "jetsink-metrics-reader")
		assertLease(t, c, releaseNS, mgr.leaseID)
		mgr.stop() // releasing the Lease needs the leader-election Role too
		assertLeaseReleased(t, c, releaseNS, mgr.leaseID)
		mgr.logs.assertNoForbidden(t)

		user := "system:serviceaccount:" + releaseNS + ":" + sa
		assertAccess(t, c, user, true, []authorizationv1.ResourceAttributes{
			{Verb: "list", Group: "jetsink.dev", Resource: "warehousesinks"},
			{Verb: "patch", Group: "jetsink.dev", Resource: "warehousesinks", Subresource: "status", Namespace: sinkNS},
			{Verb: "create", Group: "apps", Resource: "deployments", Namespace: sinkNS},
		})
		assertAccess(t, c, user, false, notNeeded(sinkNS))
	})

	// The upgrade carries a changed value and a changed CRD (a new printer
	// column in a copy of the chart): CRDs live in templates/ so that
	// upgrades apply them.
	step("helm upgrade", func(t *testing.T) {
		before := &appsv1.Deployment{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: "jetsink"}, before); err != nil {
			t.Fatal(err)
		}
		next := chartWithExtraPrinterColumn(t, chart)
		helm(t, "upgrade", "jetsink", next, "--namespace", releaseNS, "--reuse-values", "--set", "image.tag=9.9.9", "--wait=false")
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := c.Get(ctx, client.ObjectKey{Name: "warehousesinks.jetsink.dev"}, crd); err != nil {
			t.Fatal(err)
		}
		if cols := crd.Spec.Versions[0].AdditionalPrinterColumns; cols[len(cols)-1].Name != "UpgradeTest" {
			t.Errorf("helm upgrade did not apply the CRD change: columns %v", cols)
		}
		after := &appsv1.Deployment{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: "jetsink"}, after); err != nil {
			t.Fatal(err)
		}
		ctr := after.Spec.Template.Spec.Containers[0]
		if after.Generation <= before.Generation || ctr.Image != "ghcr.io/jetsink/jetsink:9.9.9" ||
			!strings.Contains(strings.Join(ctr.Args, " "), "--worker-image=ghcr.io/jetsink/jetsink:9.9.9") {
			t.Errorf("after upgrade: generation %d→%d, image %q, args %v", before.Generation, after.Generation, ctr.Image, ctr.Args)
		}
	})

	step("helm uninstall keeps the CRD and the sinks", func(t *testing.T) {
		out := helm(t, "uninstall", "jetsink", "--namespace", releaseNS)
		if !strings.Contains(out, "warehousesinks.jetsink.dev") {
			t.Errorf("helm uninstall did not report keeping the CRD:\n%s", out)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := c.Get(ctx, client.ObjectKey{Name: "warehousesinks.jetsink.dev"}, crd); err != nil || !crd.DeletionTimestamp.IsZero() {
			t.Fatalf("CRD after uninstall: %v (deleting: %v)", err, crd.DeletionTimestamp)
		}
		getSink(t, c, sinkNS, "events")
		// The rest of the release is gone.
		for _, o := range []client.Object{
			&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: releaseNS, Name: "jetsink"}},
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "jetsink-manager"}},
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "jetsink-metrics-auth"}},
			&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "jetsink-metrics-auth"}},
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "jetsink-metrics-reader"}},
		} {
			if err := c.Get(ctx, client.ObjectKeyFromObject(o), o); !apierrors.IsNotFound(err) {
				t.Errorf("%T %s after uninstall: %v", o, o.GetName(), err)
			}
		}
	})

	// A second, namespaced release next to the kept CRD: the same rules as
	// Roles in the watched namespace only, and enough for the controller.
	step("namespaced release", func(t *testing.T) {
		const ns, watched = "jetsink-scoped", "team-a"
		kubectl(t, "create", "namespace", watched)
		helm(t, "install", "scoped", chart, "--namespace", ns, "--create-namespace", "--wait=false",
			"--set", "crds.enabled=false", "--set", "watchNamespaces={"+watched+"}")
		kubectl(t, "apply", "--namespace", watched, "-k", filepath.Join(root, "config", "samples"))
		pointAtTestServers(t, watched)

		sa := serviceAccountOf(t, c, ns, "scoped-jetsink")
		mgr := runManagerAs(t, cfg, ns, sa, deploymentArgs(t, c, ns, "scoped-jetsink"))
		if mgr.leaseID != "scoped-jetsink-manager.jetsink.dev" {
			t.Errorf("release scoped: --leader-election-id=%q, want a Lease of its own", mgr.leaseID)
		}
		assertReconciled(t, c, nats, watched, "events", "jetsink_"+watched+"_events")
		assertSecretCacheStripped(t, c, mgr, watched, "s3-creds")
		// Secure metrics work in namespaced mode too: the reviews are the
		// one cluster-wide grant.
		assertMetricsAuth(t, c, mgr, ns, "scoped-jetsink-metrics-reader")
		assertLease(t, c, ns, mgr.leaseID)
		mgr.stop()
		mgr.logs.assertNoForbidden(t)

		user := "system:serviceaccount:" + ns + ":" + sa
		assertAccess(t, c, user, true, []authorizationv1.ResourceAttributes{
			{Verb: "list", Group: "jetsink.dev", Resource: "warehousesinks", Namespace: watched},
		})
		assertAccess(t, c, user, false, append(notNeeded(watched),
			authorizationv1.ResourceAttributes{Verb: "list", Group: "jetsink.dev", Resource: "warehousesinks"},
			authorizationv1.ResourceAttributes{Verb: "list", Group: "jetsink.dev", Resource: "warehousesinks", Namespace: sinkNS},
			authorizationv1.ResourceAttributes{Verb: "get", Resource: "secrets", Namespace: sinkNS},
		))
		helm(t, "uninstall", "scoped", "--namespace", ns)
	})

	step("kubectl delete crd removes the sinks", func(t *testing.T) {
		kubectl(t, "delete", "crd", "warehousesinks.jetsink.dev", "--wait=true", "--timeout=60s")
		if err := c.Get(ctx, client.ObjectKey{Namespace: sinkNS, Name: "events"}, &jetsinkv1.WarehouseSink{}); err == nil {
			t.Error("a sink survived the deletion of its CRD")
		}
	})

	// The kustomize install path applies cleanly to the same cluster.
	step("kubectl apply -k config/default", func(t *testing.T) {
		kubectl(t, "apply", "-k", filepath.Join(root, "config", "default"))
		waitEstablished(t, c)
		serviceAccountOf(t, c, releaseNS, "jetsink-manager")
		kubectl(t, "apply", "--namespace", sinkNS, "-k", filepath.Join(root, "config", "samples"))
		getSink(t, c, sinkNS, "events")
	})
}

// chartWithExtraPrinterColumn copies the chart with one more printer column
// in its CRD template, as a newer API version of the operator would bring.
func chartWithExtraPrinterColumn(t *testing.T, chart string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "jetsink")
	if err := os.CopyFS(dst, os.DirFS(chart)); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dst, "templates", "crd", "warehousesinks.jetsink.dev.yaml")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	const anchor = "    - jsonPath: .metadata.creationTimestamp\n      name: Age\n      type: date\n"
	if !strings.Contains(string(b), anchor) {
		t.Fatalf("no Age column in %s", p)
	}
	b = []byte(strings.Replace(string(b), anchor,
		anchor+"    - jsonPath: .spec.source.consumer\n      name: UpgradeTest\n      type: string\n", 1))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// notNeeded are requests no role of the chart may allow in ns.
func notNeeded(ns string) []authorizationv1.ResourceAttributes {
	return []authorizationv1.ResourceAttributes{
		{Verb: "*", Group: "*", Resource: "*"},
		{Verb: "create", Resource: "secrets", Namespace: ns},
		{Verb: "update", Resource: "secrets", Namespace: ns},
		{Verb: "delete", Group: "apps", Resource: "deployments", Namespace: ns},
		{Verb: "delete", Group: "jetsink.dev", Resource: "warehousesinks", Namespace: ns},
		{Verb: "create", Resource: "pods", Namespace: ns},
		{Verb: "create", Resource: "pods", Subresource: "exec", Namespace: ns},
		{Verb: "get", Resource: "nodes"},
		{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings"},
		{Verb: "escalate", Group: "rbac.authorization.k8s.io", Resource: "clusterroles"},
		{Verb: "bind", Group: "rbac.authorization.k8s.io", Resource: "clusterroles"},
		{Verb: "impersonate", Resource: "users"},
		{Verb: "impersonate", Resource: "serviceaccounts", Namespace: ns},
		{Verb: "update", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"},
		{Verb: "create", Resource: "serviceaccounts", Subresource: "token", Namespace: ns},
	}
}

// managerRun is a manager started by runManagerAs.
type managerRun struct {
	logs *logRecorder
	// stop stops the manager (idempotent; also run when the test ends).
	stop func()
	// cache is the manager's own cache, as the controller reads it.
	cache client.Reader
	// metricsURL is its /metrics endpoint: HTTPS, authenticated.
	metricsURL string
	leaseID    string
}

// runManagerAs runs the operator's controller as main.go wires it, with the
// flags the chart rendered into the manager's Deployment (namespaces, the
// leader election, secure metrics), but with every request impersonating
// the ServiceAccount, until stop is called or the test ends.
func runManagerAs(t *testing.T, cfg *rest.Config, ns, sa string, args []string) *managerRun {
	t.Helper()
	imp := rest.CopyConfig(cfg)
	imp.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":" + sa,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	logs := &logRecorder{}
	log := logs.logger()
	// client-go's reflectors and event broadcaster log through klog: a
	// Forbidden list, watch or event lands in the same recorder.
	klog.SetLogger(log)
	t.Cleanup(func() { klog.ClearLogger() })

	if !slices.Contains(args, "--leader-elect") || argValue(args, "--metrics-secure") != "true" {
		t.Fatalf("the chart's manager args %v: want leader election and secure metrics", args)
	}
	duration := func(flag string) *time.Duration {
		d, err := time.ParseDuration(argValue(args, flag))
		if err != nil {
			t.Fatalf("%s: %v", flag, err)
		}
		return &d
	}
	var watch []string
	if v := argValue(args, "--namespaces"); v != "" {
		watch = strings.Split(v, ",")
	}
	run := &managerRun{logs: logs, leaseID: argValue(args, "--leader-election-id")}
	metricsAddr := freeAddr(t)
	run.metricsURL = "https://" + metricsAddr + "/metrics"
	mgr, err := ctrl.NewManager(imp, ctrl.Options{
		Scheme: scheme,
		Logger: log,
		Cache:  controllers.CacheOptions(watch),
		Metrics: metricsserver.Options{
			BindAddress:    metricsAddr,
			SecureServing:  true,
			FilterProvider: filters.WithAuthenticationAndAuthorization,
		},
		HealthProbeBindAddress:        "0",
		LeaderElection:                true,
		LeaderElectionID:              run.leaseID,
		LeaderElectionNamespace:       ns,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 duration("--leader-elect-lease-duration"),
		RenewDeadline:                 duration("--leader-elect-renew-deadline"),
		RetryPeriod:                   duration("--leader-elect-retry-period"),
		// Two managers run in this process, one after the other.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	run.cache = mgr.GetCache()
	if err := (&controllers.WarehouseSinkReconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder("jetsink"),
		WorkerImage:   "ghcr.io/jetsink/jetsink:test",
		StatusRefresh: time.Minute,
	}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	run.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager: %v", err)
			}
		})
	}
	t.Cleanup(run.stop)
	return run
}

// deploymentArgs are the manager's arguments in the release's Deployment.
func deploymentArgs(t *testing.T, c client.Client, ns, name string) []string {
	t.Helper()
	dep := &appsv1.Deployment{}
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, dep); err != nil {
		t.Fatal(err)
	}
	return dep.Spec.Template.Spec.Containers[0].Args
}

// freeAddr is a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// assertSecretCacheStripped: the Secret, applied with kubectl, carries its
// data in the last-applied annotation on the API server; the manager's
// cache holds its metadata without it (controllers.CacheOptions).
func assertSecretCacheStripped(t *testing.T, c client.Client, mgr *managerRun, ns, name string) {
	t.Helper()
	stored := &corev1.Secret{}
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, stored); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stored.Annotations[corev1.LastAppliedConfigAnnotation], "AWS_SECRET_ACCESS_KEY") {
		t.Fatalf("the sample Secret %s/%s has no last-applied data to strip: annotations %v", ns, name, stored.Annotations)
	}
	cached := &metav1.PartialObjectMetadata{}
	cached.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := mgr.cache.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, cached); err != nil {
		t.Fatalf("the manager's cache: %v", err)
	}
	if len(cached.Annotations) != 0 || cached.ManagedFields != nil {
		t.Errorf("the manager caches Secret %s/%s with annotations %d and managedFields %d: the last-applied configuration holds its data",
			ns, name, len(cached.Annotations), len(cached.ManagedFields))
	}
}

// assertMetricsAuth scrapes the manager as Prometheus would, with a
// ServiceAccount token: refused without a token (401) and for a
// ServiceAccount without the reader role (403), served to one bound to it.
// The manager checks each token and permission with the API server, under
// the chart's metrics-auth ClusterRole.
func assertMetricsAuth(t *testing.T, c client.Client, mgr *managerRun, ns, readerRole string) {
	t.Helper()
	ctx := t.Context()
	token := func(name string) string {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		if err := c.Create(ctx, sa); err != nil {
			t.Fatal(err)
		}
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}
		if err := c.SubResource("token").Create(ctx, sa, tr); err != nil {
			t.Fatalf("token for %s/%s: %v", ns, name, err)
		}
		return tr.Status.Token
	}
	prometheus, stranger := token("prometheus"), token("stranger")
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-prometheus-metrics-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: readerRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "prometheus"}},
	}
	if err := c.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), binding) })

	// The certificate is self-signed, as the ServiceMonitor expects by
	// default (insecureSkipVerify).
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	scrape := func(token string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, mgr.metricsURL, nil)
		if err != nil {
			return 0, "", err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	for _, tc := range []struct {
		who, token string
		want       int
	}{
		{"anonymous", "", http.StatusUnauthorized},
		{"a ServiceAccount without " + readerRole, stranger, http.StatusForbidden},
		{"a ServiceAccount bound to " + readerRole, prometheus, http.StatusOK},
	} {
		eventually(t, "GET /metrics as "+tc.who, func() error {
			code, body, err := scrape(tc.token)
			if err != nil {
				return err
			}
			if code != tc.want {
				return fmt.Errorf("status %d, want %d: %.200s", code, tc.want, body)
			}
			if code == http.StatusOK && !strings.Contains(body, "controller_runtime_reconcile_total") {
				return fmt.Errorf("no controller metrics in %.200s", body)
			}
			return nil
		})
	}
	for _, name := range []string{"prometheus", "stranger"} {
		_ = c.Delete(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
	}
}

// assertReconciled waits for the sink's workers, metrics Service, consumer
// and status: every write the controller makes went through.
func assertReconciled(t *testing.T, c client.Client, nats *natstest.Server, ns, name, consumer string) {
	t.Helper()
	ctx := t.Context()
	var sink *jetsinkv1.WarehouseSink
	eventually(t, "the sink's status is written", func() error {
		sink = getSink(t, c, ns, name)
		if sink.Status.Consumer == nil || sink.Status.Selector == "" {
			return fmt.Errorf("status %+v", sink.Status)
		}
		return nil
	})
	for _, cond := range sink.Status.Conditions {
		if cond.Type == jetsinkv1.ConditionStalled && cond.Status == metav1.ConditionTrue ||
			strings.Contains(strings.ToLower(cond.Message), "forbidden") {
			t.Errorf("condition %s=%s %s: %s", cond.Type, cond.Status, cond.Reason, cond.Message)
		}
	}
	dep := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, dep); err != nil {
		t.Fatalf("workers' Deployment: %v", err)
	}
	if !metav1.IsControlledBy(dep, sink) {
		t.Errorf("Deployment owners %v, want the sink", dep.OwnerReferences)
	}
	svc := &corev1.Service{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: workload.ServiceName(sink)}, svc); err != nil {
		t.Fatalf("workers' metrics Service: %v", err)
	}
	_, js := nats.JetStream(t)
	if _, err := js.Consumer(ctx, "EVENTS", consumer); err != nil {
		t.Errorf("JetStream consumer %q: %v", consumer, err)
	}
}

// waitEstablished waits until the WarehouseSink CRD serves its API.
func waitEstablished(t *testing.T, c client.Client) {
	t.Helper()
	eventually(t, "the CRD is established", func() error {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := c.Get(t.Context(), client.ObjectKey{Name: "warehousesinks.jetsink.dev"}, crd); err != nil {
			return err
		}
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("conditions %v", crd.Status.Conditions)
	})
}

// assertLease: leader election worked with the leader-election Role, on
// the Lease the chart named.
func assertLease(t *testing.T, c client.Client, ns, id string) {
	t.Helper()
	lease := &coordinationv1.Lease{}
	eventually(t, "the leader-election Lease "+id+" is held", func() error {
		if err := c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: id}, lease); err != nil {
			return err
		}
		if ptr.Deref(lease.Spec.HolderIdentity, "") == "" {
			return fmt.Errorf("no holder")
		}
		return nil
	})
}

// assertLeaseReleased: a stopped manager gave its Lease up
// (LeaderElectionReleaseOnCancel), so a standby need not wait out the
// lease duration.
func assertLeaseReleased(t *testing.T, c client.Client, ns, id string) {
	t.Helper()
	lease := &coordinationv1.Lease{}
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: id}, lease); err != nil {
		t.Fatal(err)
	}
	if h := ptr.Deref(lease.Spec.HolderIdentity, ""); h != "" {
		t.Errorf("Lease %s/%s still held by %q after the manager stopped", ns, id, h)
	}
}

// assertAccess asks the API server's authorizer whether user may do each
// request, and wants the answer allowed.
func assertAccess(t *testing.T, c client.Client, user string, allowed bool, reqs []authorizationv1.ResourceAttributes) {
	t.Helper()
	ns, _, _ := strings.Cut(strings.TrimPrefix(user, "system:serviceaccount:"), ":")
	for _, ra := range reqs {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               user,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: &ra,
		}}
		if err := c.Create(t.Context(), sar); err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != allowed {
			t.Errorf("%s may %s %s/%s/%s in %q: %v, want %v (%s)", user, ra.Verb, ra.Group, ra.Resource, ra.Subresource,
				ra.Namespace, sar.Status.Allowed, allowed, sar.Status.Reason)
		}
	}
}

// serviceAccountOf returns the ServiceAccount the release's manager
// Deployment runs as, checking the chart created it.
func serviceAccountOf(t *testing.T, c client.Client, ns, deployment string) string {
	t.Helper()
	dep := &appsv1.Deployment{}
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: deployment}, dep); err != nil {
		t.Fatal(err)
	}
	name := dep.Spec.Template.Spec.ServiceAccountName
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &corev1.ServiceAccount{}); err != nil {
		t.Fatalf("ServiceAccount %s/%s: %v", ns, name, err)
	}
	return name
}

func getSink(t *testing.T, c client.Client, ns, name string) *jetsinkv1.WarehouseSink {
	t.Helper()
	sink := &jetsinkv1.WarehouseSink{}
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, sink); err != nil {
		t.Fatalf("sink %s/%s: %v", ns, name, err)
	}
	return sink
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logRecorder keeps the manager's log lines for the Forbidden check.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.lines = append(r.lines, prefix+" "+args)
	}, funcr.Options{Verbosity: 1})
}

func (r *logRecorder) assertNoForbidden(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		if strings.Contains(strings.ToLower(l), "forbidden") {
			t.Errorf("the manager was refused a request: %s", l)
		}
	}
	if t.Failed() {
		t.Logf("manager log:\n%s", strings.Join(r.lines, "\n"))
	}
}
