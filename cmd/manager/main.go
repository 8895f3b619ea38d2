// Command manager runs the jetsink operator: it reconciles WarehouseSinks
// into Deployments of sink workers. It only wires flags to constructors.
package main

import (
	"flag"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers"
)

func main() {
	var (
		metricsAddr, probeAddr, workerImage, namespaces string
		leaderElect                                     bool
		statusRefresh                                   time.Duration
		concurrency                                     int
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the manager's Prometheus metrics endpoint; 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader so that only one of several manager replicas reconciles.")
	flag.StringVar(&workerImage, "worker-image", envOr("JETSINK_WORKER_IMAGE", "ghcr.io/jetsink/jetsink:latest"), "Image of the sink workers, for sinks that name none.")
	flag.StringVar(&namespaces, "namespaces", "", "Comma-separated namespaces to watch; empty watches all.")
	flag.DurationVar(&statusRefresh, "status-refresh", 30*time.Second, "How often the consumer lag of every healthy sink is re-read into its status, in one batch (one NATS connection per server and credentials, no reconcile); 0 turns the refresh off.")
	flag.IntVar(&concurrency, "max-concurrent-reconciles", 4, "How many sinks are reconciled at once.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(jetsinkv1.AddToScheme(scheme))

	cacheOpts := cache.Options{}
	if namespaces != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range strings.Split(namespaces, ",") {
			cacheOpts.DefaultNamespaces[strings.TrimSpace(ns)] = cache.Config{}
		}
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Cache:                  cacheOpts,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "jetsink-manager.jetsink.dev",
	})
	if err != nil {
		log.Error(err, "Failed to create the manager")
		os.Exit(1)
	}
	if err := (&controllers.WarehouseSinkReconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder("jetsink"),
		WorkerImage:   workerImage,
		StatusRefresh: statusRefresh,
		Concurrency:   concurrency,
	}).SetupWithManager(mgr); err != nil {
		log.Error(err, "Failed to set up the controller")
		os.Exit(1)
	}
	utilruntime.Must(mgr.AddHealthzCheck("healthz", healthz.Ping))
	utilruntime.Must(mgr.AddReadyzCheck("readyz", healthz.Ping))

	log.Info("Starting the manager", "workerImage", workerImage, "namespaces", namespaces)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "Manager stopped")
		os.Exit(1)
	}
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
