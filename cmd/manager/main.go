// Command manager runs the jetsink operator: it reconciles WarehouseSinks
// into Deployments of sink workers. It only wires flags to constructors.
package main

import (
	"flag"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers"
)

func main() {
	var (
		metricsAddr, metricsCertPath, probeAddr, workerImage, namespaces string
		leaderElectionID                                                 string
		metricsSecure, enableHTTP2, leaderElect                          bool
		leaseDuration, renewDeadline, retryPeriod, statusRefresh         time.Duration
		concurrency                                                      int
		allowedImages                                                    []string
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "Address of the manager's Prometheus metrics endpoint (/metrics); 0 disables it.")
	flag.BoolVar(&metricsSecure, "metrics-secure", true, "Serve /metrics over HTTPS to callers the API server authenticates (TokenReview) and authorizes for GET on the non-resource URL /metrics (SubjectAccessReview); false serves plain HTTP to anyone, for a manager run locally.")
	flag.StringVar(&metricsCertPath, "metrics-cert-path", "", "Directory with tls.crt and tls.key for the HTTPS metrics endpoint, reloaded when they change; empty uses a self-signed certificate generated at start.")
	flag.BoolVar(&enableHTTP2, "enable-http2", false, "Offer HTTP/2 on the HTTPS metrics endpoint (off: HTTP/2 rapid reset is a denial of service).")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader so that only one of several manager replicas reconciles.")
	flag.StringVar(&leaderElectionID, "leader-election-id", "jetsink-manager.jetsink.dev", "Name of the leader-election Lease in the manager's namespace. Managers with the same name in one namespace elect one leader between them: each installation needs its own.")
	flag.DurationVar(&leaseDuration, "leader-elect-lease-duration", 15*time.Second, "How long standbys wait after the leader's last renewal before one takes over the Lease.")
	flag.DurationVar(&renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "How long the leader retries renewing the Lease before it stops (and exits); less than the lease duration.")
	flag.DurationVar(&retryPeriod, "leader-elect-retry-period", 2*time.Second, "How often the leader renews the Lease and standbys try to acquire it.")
	flag.StringVar(&workerImage, "worker-image", envOr("JETSINK_WORKER_IMAGE", "ghcr.io/jetsink/jetsink:latest"), "Image of the sink workers, for sinks that name none.")
	flag.Func("allowed-worker-images", allowedImagesUsage, func(s string) (err error) {
		allowedImages, err = parseAllowedImages(s)
		return err
	})
	flag.StringVar(&namespaces, "namespaces", "", "Comma-separated namespaces to watch; empty watches all.")
	flag.DurationVar(&statusRefresh, "status-refresh", 30*time.Second, "How often the consumer lag of every healthy sink is re-read, in one batch over pooled NATS connections (no reconcile); its status is written only when the lag moved meaningfully or is 5 minutes old, and every 10 intervals each sink is reconciled again to recheck its destination. 0 turns the refresh off.")
	flag.IntVar(&concurrency, "max-concurrent-reconciles", 4, "How many sinks are reconciled at once.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(jetsinkv1.AddToScheme(scheme))

	metricsOpts, err := metricsOptions(metricsAddr, metricsSecure, metricsCertPath, enableHTTP2)
	if err != nil {
		log.Error(err, "Invalid metrics flags")
		os.Exit(1)
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controllers.CacheOptions(splitList(namespaces)),
		Metrics:                metricsOpts,
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       leaderElectionID,
		// The leader gives the Lease up as it exits, so a standby takes
		// over at once instead of after the lease duration. Safe because
		// the process ends as soon as Start returns.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &leaseDuration,
		RenewDeadline:                 &renewDeadline,
		RetryPeriod:                   &retryPeriod,
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
		AllowedImages: allowedImages,
		StatusRefresh: statusRefresh,
		Concurrency:   concurrency,
	}).SetupWithManager(mgr); err != nil {
		log.Error(err, "Failed to set up the controller")
		os.Exit(1)
	}
	utilruntime.Must(mgr.AddHealthzCheck("healthz", healthz.Ping))
	utilruntime.Must(mgr.AddReadyzCheck("readyz", healthz.Ping))

	log.Info("Starting the manager", "workerImage", workerImage, "allowedWorkerImages", describeAllowed(allowedImages),
		"namespaces", namespaces, "metricsSecure", metricsSecure, "leaderElectionID", leaderElectionID)
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
