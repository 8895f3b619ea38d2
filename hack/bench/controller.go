package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
)

// The controller benchmark: the envtest API server (kube-apiserver + etcd
// built by hack/tools), bin/manager as its own process with its default
// flags (but plain-HTTP metrics, which the bench scrapes), and n
// WarehouseSinks on the bench's JetStream server. It times how long until
// every sink has its Deployment and a written status, takes the manager's
// peak RSS, and over a quiet window after (nothing published, nothing
// edited) counts reconciles and sink writes: a watch sees every write of
// any writer, the manager's jetsink_lag_status_writes_total the lag
// refresher's. A converged fleet whose lag does not move should see none.

type controllerResult struct {
	sinks       int
	converge    time.Duration
	reconciles  float64 // until convergence
	quiet       time.Duration
	quietRecons float64 // during the quiet window after convergence
	quietWrites float64 // sink writes seen by a watch during the quiet window
	quietLag    float64 // of which the lag refresher's (its counter)
	rssMiB      float64
	errors      float64 // reconcile errors until the end
	unconverged string  // set when the sinks did not all converge in time
}

const sinkStream = "SINKS"

func (s *stack) benchController(ctx context.Context, root, binDir, manager string, n int, quiet time.Duration) (*controllerResult, error) {
	if _, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: sinkStream, Subjects: []string{"sinks.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		return nil, err
	}
	// envtest logs through controller-runtime; its output is not the table.
	ctrllog.SetLogger(crzap.New(crzap.WriteTo(io.Discard)))
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: binDir,
	}
	// envtest's default Service range is a /24: 254 ClusterIPs, fewer than
	// the metrics Services of 1,000 sinks. A cluster's is a /12 or so.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/12")
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start envtest (kube-apiserver and etcd from %s): %w", binDir, err)
	}
	defer env.Stop()
	user, err := env.AddUser(envtest.User{Name: "jetsink-bench-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	kcPath := filepath.Join(s.dir, "kubeconfig")
	if err := os.WriteFile(kcPath, kubeconfig, 0o600); err != nil {
		return nil, err
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(jetsinkv1.AddToScheme(scheme))
	cfg.QPS, cfg.Burst = 1000, 2000
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	const ns = "bench"
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return nil, err
	}

	// Every sink names one S3 Secret, as the samples do: each reconcile then
	// also reads it and checks the bucket with it.
	if err := k8s.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "s3-creds"},
		StringData: map[string]string{"AWS_ACCESS_KEY_ID": s3test.AccessKey, "AWS_SECRET_ACCESS_KEY": s3test.SecretKey},
	}); err != nil {
		return nil, err
	}

	metricsAddr := "127.0.0.1:" + strconv.Itoa(freePort())
	logPath := filepath.Join(s.dir, "manager.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// The manager serves HTTPS metrics to authorized callers by default;
	// the bench scrapes them over plain HTTP on loopback.
	cmd := exec.Command(manager, "--metrics-bind-address", metricsAddr, "--metrics-secure=false",
		"--health-probe-bind-address", "127.0.0.1:"+strconv.Itoa(freePort()))
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kcPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", manager, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	// Wait for the manager to serve metrics: it is up and watching.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := scrapeReconciles(metricsAddr); err == nil {
			break
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("manager exited (%v): %s", err, tail(logPath, 2000))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("manager did not serve metrics on %s: %s", metricsAddr, tail(logPath, 2000))
		}
	}

	res := &controllerResult{sinks: n, quiet: quiet}
	start := time.Now()
	p := newPool(ctx, 16)
	for i := range n {
		p.Go(func(ctx context.Context) error {
			return k8s.Create(ctx, benchSink(ns, i, s.natsURL(), s.s3URL))
		})
	}
	if err := p.Wait(); err != nil {
		return nil, fmt.Errorf("create sinks: %w", err)
	}
	// Long enough to see how far past the 60 s target convergence goes;
	// past it the result says how many sinks were still missing.
	timeout := 120*time.Second + time.Duration(n)*200*time.Millisecond
	for {
		deps, done, err := converged(ctx, k8s, ns)
		if err != nil {
			return nil, err
		}
		if deps == n && done == n {
			res.converge = time.Since(start)
			break
		}
		if time.Since(start) > timeout {
			res.converge = time.Since(start)
			res.unconverged = fmt.Sprintf("not converged after %s: %d Deployments, %d statuses written (log %s)", timeout.Round(time.Second), deps, done, logPath)
			break
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("manager exited (%v): %s", err, tail(logPath, 2000))
		case <-time.After(100 * time.Millisecond):
		}
	}
	writes, err := watchWrites(ctx, cfg, scheme, ns)
	if err != nil {
		return nil, err
	}
	before, err := scrapeReconciles(metricsAddr)
	if err != nil {
		return nil, err
	}
	res.reconciles = before.total
	time.Sleep(quiet)
	after, err := scrapeReconciles(metricsAddr)
	if err != nil {
		return nil, err
	}
	res.quietWrites = float64(writes())
	res.quietRecons = after.total - before.total
	res.quietLag = after.lagWrites - before.lagWrites
	res.errors = after.errors
	st, err := readProc(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	res.rssMiB = st.hwmMiB
	return res, nil
}

// benchSink is a default sink, each with its own consumer on one stream.
func benchSink(ns string, i int, natsURL, s3URL string) *jetsinkv1.WarehouseSink {
	sink := &jetsinkv1.WarehouseSink{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("sink-%04d", i)}}
	sink.Spec.Replicas = ptr.To(int32(1))
	sink.Spec.Source.URL = natsURL
	sink.Spec.Source.Stream = sinkStream
	sink.Spec.Source.Consumer = fmt.Sprintf("sink-%04d", i)
	sink.Spec.Source.FilterSubjects = []string{fmt.Sprintf("sinks.%04d.>", i)}
	sink.Spec.Destination.Bucket = bucket
	sink.Spec.Destination.Prefix = fmt.Sprintf("sinks/%04d/", i)
	sink.Spec.Destination.Endpoint = s3URL
	sink.Spec.Destination.ForcePathStyle = true
	sink.Spec.Destination.CredentialsSecretRef = &corev1.LocalObjectReference{Name: "s3-creds"}
	return sink
}

// converged counts the sinks' Deployments (controlled by a sink) and the
// sinks whose status has been written (conditions, consumer, selector).
func converged(ctx context.Context, k8s client.Client, ns string) (deps, statuses int, err error) {
	var dl appsv1.DeploymentList
	if err := k8s.List(ctx, &dl, client.InNamespace(ns)); err != nil {
		return 0, 0, err
	}
	for _, d := range dl.Items {
		if ref := metav1.GetControllerOf(&d); ref != nil && ref.Kind == "WarehouseSink" {
			deps++
		}
	}
	var sl jetsinkv1.WarehouseSinkList
	if err := k8s.List(ctx, &sl, client.InNamespace(ns)); err != nil {
		return 0, 0, err
	}
	for _, s := range sl.Items {
		if len(s.Status.Conditions) > 0 && s.Status.Consumer != nil && s.Status.Selector != "" {
			statuses++
		}
	}
	return deps, statuses, nil
}

// watchWrites counts the writes to the namespace's sinks from now on, by
// any writer, until ctx ends; the returned func reads the count so far.
func watchWrites(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, ns string) (func() int64, error) {
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	var list jetsinkv1.WarehouseSinkList
	if err := wc.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	w, err := wc.Watch(ctx, &jetsinkv1.WarehouseSinkList{}, client.InNamespace(ns),
		&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
	if err != nil {
		return nil, err
	}
	var n atomic.Int64
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				if ev.Type == watch.Modified {
					n.Add(1)
				}
			}
		}
	}()
	return n.Load, nil
}

type reconcileCount struct{ total, errors, lagWrites float64 }

// scrapeReconciles sums controller_runtime_reconcile_total of the
// warehousesink controller over its results, and reads the lag
// refresher's status writes.
func scrapeReconciles(addr string) (reconcileCount, error) {
	var c reconcileCount
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "jetsink_lag_status_writes_total "); ok {
			c.lagWrites, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
			continue
		}
		if !strings.HasPrefix(line, "controller_runtime_reconcile_total{") || !strings.Contains(line, `controller="warehousesink"`) {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		c.total += v
		if strings.Contains(line, `result="error"`) {
			c.errors += v
		}
	}
	return c, sc.Err()
}
