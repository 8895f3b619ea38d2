package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
)

// k8s is a client of the envtest API server shared by the package's tests;
// the manager running the reconciler is started once, in TestMain.
var k8s client.Client

// restConfig reaches the envtest API server, for tests that start a cache
// or client of their own.
var restConfig *rest.Config

// reconciles counts the manager's reconciles per sink. Tests share the
// manager and run side by side, so the controller-wide metric cannot tell
// whose reconciles it counted.
var reconciles = &reconcileCounter{counts: map[types.NamespacedName]int{}}

// statusRefresh is the manager's StatusRefresh in the tests.
const statusRefresh = time.Second

// allowedImages is the one spec.image pattern the tests' manager allows.
const allowedImages = "registry.example.com/jetsink/*"

type reconcileCounter struct {
	next   reconcile.Reconciler
	mu     sync.Mutex
	counts map[types.NamespacedName]int
}

func (c *reconcileCounter) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	c.mu.Lock()
	c.counts[req.NamespacedName]++
	c.mu.Unlock()
	return c.next.Reconcile(ctx, req)
}

func (c *reconcileCounter) of(key types.NamespacedName) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[key]
}

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		panic(err)
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		os.Setenv("KUBEBUILDER_ASSETS", filepath.Join(root, "bin"))
	}
	if _, err := os.Stat(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kube-apiserver")); err != nil {
		fmt.Fprintln(os.Stderr, "kube-apiserver not found in KUBEBUILDER_ASSETS: run `make test` (it builds the tools) or `./hack/tools/install.sh etcd kube-apiserver`")
		return 1
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.Level(zapLevel())))

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		_ = env.Stop() // a CRD the API server refuses fails Start after etcd and kube-apiserver run
		return 1
	}
	defer env.Stop()
	restConfig = cfg

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(jetsinkv1.AddToScheme(scheme))
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		panic(err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Cache: CacheOptions(nil), Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		panic(err)
	}
	r := &WarehouseSinkReconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder("jetsink"),
		WorkerImage:   "jetsink:test",
		AllowedImages: []string{allowedImages},
		StatusRefresh: statusRefresh,
		// Long enough for a deletion with NATS up, short enough to test
		// one with NATS gone.
		DeletionGiveUp: 10 * time.Second,
	}
	reconciles.next = r
	if err := r.setupWithManager(mgr, reconciles); err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	code := m.Run()
	cancel()
	<-done
	return code
}

func zapLevel() zapcore.Level {
	if os.Getenv("JETSINK_TEST_VERBOSE") != "" {
		return -1
	}
	return 2 // errors only: keep test output readable
}

// namespace creates a namespace for one test.
func namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "sink-test-"}}
	if err := k8s.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}
