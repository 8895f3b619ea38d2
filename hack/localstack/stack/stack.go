// Package stack starts jetsink's local stack — everything DESIGN.md lists
// under "Real components" — and stops it again: a real single-node
// Kubernetes (package hack/cluster: etcd, the control plane, containerd and
// a kubelet), the product's image built from bin/manager and bin/sinkworker
// (package hack/image) and imported into containerd, a NATS JetStream
// server with a file store (in-process) and versitygw with its posix
// backend (objects are plain files under <dir>/s3/<bucket>/), both on the
// cluster's host address where pods reach them, and the operator installed
// as users install it: `helm install` of charts/jetsink, so the manager runs
// as a pod under the chart's ServiceAccount and RBAC, and every sink's
// workers run as real containers.
//
// The localstack command, the demo and the end-to-end tests all start the
// stack through Start; nothing in the product imports it.
package stack

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	_ "github.com/jackc/pgx/v5/stdlib" // the catalog database's set-up
	"github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
	"github.com/jetsink/jetsink/hack/cluster"
	"github.com/jetsink/jetsink/hack/image"
	"github.com/jetsink/jetsink/hack/proc"
	"github.com/jetsink/jetsink/internal/pgserver"
	"github.com/jetsink/jetsink/internal/reporoot"
)

// Credentials of versitygw's root account; the stack's S3 Secret holds them.
const (
	S3AccessKey = "jetsink-local"
	S3SecretKey = "jetsink-local-secret"
	S3Region    = "us-east-1"

	// CatalogUser and CatalogPassword log in to the Iceberg SQL catalog's
	// database, CatalogDatabase, on the stack's PostgreSQL.
	CatalogUser     = "jetsink"
	CatalogPassword = "jetsink-local-catalog"
	CatalogDatabase = "catalog"
)

// What the chart is installed as.
const (
	Release          = "jetsink"
	ManagerNamespace = "jetsink-system"
	// ManagerDeployment is the chart's manager Deployment for Release.
	ManagerDeployment = "jetsink"
)

// Options configure Start. Zero values are sensible defaults.
type Options struct {
	// RepoRoot holds go.mod, bin/ and charts/; default: found from the
	// working directory.
	RepoRoot string
	// Dir holds everything the stack writes (kubeconfig, logs, the NATS
	// store, the S3 files); default: a new temp dir, removed by Stop.
	Dir string
	// ManagerBinary, WorkerBinary and TableWorkerBinary default to
	// bin/manager, bin/sinkworker and bin/sinkworker-iceberg (built by
	// `make build`); all go into the image.
	ManagerBinary, WorkerBinary, TableWorkerBinary string
	// StatusRefresh is the manager's --status-refresh; default 2s.
	StatusRefresh time.Duration
	// HelmArgs are added to the chart's `helm install`.
	HelmArgs []string
	// Progress receives one line per stage; default discards.
	Progress io.Writer
}

// Stack is a running local stack.
type Stack struct {
	// Dir holds the stack's files; Kubeconfig is the admin kubeconfig in it.
	Dir, Kubeconfig string
	// LogDir holds the host processes' logs (the cluster's components,
	// versitygw); the pods' logs are the kubelet's (kubectl logs).
	LogDir string
	// NATSURL is the JetStream server's client URL, S3URL versitygw's
	// endpoint (path-style): both on the cluster's host address, the URLs
	// a sink names. S3Dir is versitygw's posix root, one directory per
	// bucket.
	NATSURL, S3URL, S3Dir string
	// CatalogURI is the Iceberg SQL catalog's PostgreSQL database, as a
	// sink names it (user CatalogUser, password CatalogPassword);
	// CatalogAddr the server's host:port, where the host (not a pod) may
	// log in as postgres without a password.
	CatalogURI, CatalogAddr string
	// Image is the product image the manager and the workers run;
	// NextImage the same image under another tag, for a rolling update of
	// spec.image.
	Image, NextImage string
	// Config and Client talk to the API server as an admin.
	Config *rest.Config
	Client client.Client
	// Cluster is the Kubernetes the stack runs on.
	Cluster *cluster.Cluster

	opts      Options
	removeDir bool
	nats      *server.Server
	procs     []*proc.Proc // host processes, stopped in reverse
	pg        *pgserver.Cluster
	pods      *podWatch
}

// Scheme knows the built-in kinds and WarehouseSink.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(jetsinkv1.AddToScheme(s))
	return s
}

// Available says why the stack cannot run on this machine (no root, no
// containerd...), or nil.
func Available() error { return cluster.Check() }

// Start starts every component, in dependency order. On error, what was
// started is stopped again.
func Start(ctx context.Context, opts Options) (s *Stack, err error) {
	logf.SetLogger(logr.Discard()) // the stack's client would warn that it has none
	if opts.RepoRoot == "" {
		if opts.RepoRoot, err = reporoot.Find(); err != nil {
			return nil, err
		}
	}
	bin := filepath.Join(opts.RepoRoot, "bin")
	if opts.ManagerBinary == "" {
		opts.ManagerBinary = filepath.Join(bin, "manager")
	}
	if opts.WorkerBinary == "" {
		opts.WorkerBinary = filepath.Join(bin, "sinkworker")
	}
	if opts.TableWorkerBinary == "" {
		opts.TableWorkerBinary = filepath.Join(bin, "sinkworker-iceberg")
	}
	if opts.StatusRefresh == 0 {
		opts.StatusRefresh = 2 * time.Second
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	for _, b := range []string{opts.ManagerBinary, opts.WorkerBinary, opts.TableWorkerBinary, filepath.Join(bin, "helm"),
		filepath.Join(bin, "kubectl"), filepath.Join(bin, "versitygw")} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("localstack: %s is missing: run `make build tools` first", b)
		}
	}
	s = &Stack{opts: opts, Dir: opts.Dir}
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "jetsink-localstack-"); err != nil {
			return nil, err
		}
		s.removeDir = true
	}
	s.LogDir = filepath.Join(s.Dir, "logs")
	if err := os.MkdirAll(s.LogDir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = s.Stop()
			s = nil
		}
	}()

	s.progress("building the images from bin/manager, bin/sinkworker and bin/sinkworker-iceberg")
	archive := filepath.Join(s.Dir, "images.tar")
	written, err := s.buildImages(ctx, archive)
	if err != nil {
		return s, err
	}
	s.Image, s.NextImage = written[0].Ref, written[1].Ref
	s.progress("starting a single-node Kubernetes (control plane, containerd, kubelet)")
	s.Cluster, err = cluster.Start(ctx, cluster.Options{
		BinDir: bin, LogDir: s.LogDir, Images: []string{archive},
		SandboxImage: written[2].Ref, Progress: opts.Progress,
	})
	if err != nil {
		return s, err
	}
	if err := s.connect(); err != nil {
		return s, err
	}
	s.progress("starting NATS JetStream (file store) on " + cluster.HostIP)
	if err := s.startNATS(); err != nil {
		return s, err
	}
	s.progress("starting versitygw (S3, posix backend) on " + cluster.HostIP)
	if err := s.startS3(ctx, filepath.Join(bin, "versitygw")); err != nil {
		return s, err
	}
	s.progress("starting PostgreSQL (the Iceberg SQL catalog's database) on " + cluster.HostIP)
	if err := s.startCatalog(ctx); err != nil {
		return s, err
	}
	s.progress("helm install of charts/jetsink (the manager runs as a pod)")
	if err := s.installChart(ctx); err != nil {
		return s, err
	}
	return s, nil
}

func (s *Stack) progress(msg string) {
	fmt.Fprintf(s.opts.Progress, "localstack: %s\n", msg)
}

// buildImages writes the product image (as Image and NextImage) and the
// pause image into one archive for containerd.
func (s *Stack) buildImages(ctx context.Context, archive string) ([]image.Written, error) {
	product, err := image.Product(image.ProductOptions{Manager: s.opts.ManagerBinary, Worker: s.opts.WorkerBinary,
		TableWorker: s.opts.TableWorkerBinary})
	if err != nil {
		return nil, err
	}
	repo := strings.TrimSuffix(product.Ref.String(), ":"+product.Ref.TagStr())
	nextRef, err := name.NewTag(repo+":local-next", name.StrictValidation)
	if err != nil {
		return nil, err
	}
	pause, err := image.Pause(ctx, image.PauseOptions{BuildDir: filepath.Join(s.Dir, "image-build")})
	if err != nil {
		return nil, err
	}
	return image.Write(archive, product, image.Image{Ref: nextRef, Image: product.Image}, pause)
}

func (s *Stack) connect() error {
	kc, err := os.ReadFile(s.Cluster.Kubeconfig)
	if err != nil {
		return err
	}
	// The cluster's kubeconfig points into its own directory, removed at
	// Stop; the stack's copy embeds nothing but paths that live as long.
	s.Kubeconfig = filepath.Join(s.Dir, "kubeconfig")
	if err := os.WriteFile(s.Kubeconfig, kc, 0o600); err != nil {
		return err
	}
	s.Config = rest.CopyConfig(s.Cluster.Config)
	s.Config.QPS, s.Config.Burst = 200, 400
	if s.Client, err = client.New(s.Config, client.Options{Scheme: Scheme()}); err != nil {
		return err
	}
	s.pods, err = watchPods(s.Config)
	return err
}

func (s *Stack) startNATS() error {
	ns, err := server.NewServer(&server.Options{
		Host: cluster.HostIP, Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: filepath.Join(s.Dir, "nats"), NoSigs: true, NoLog: true,
	})
	if err != nil {
		return fmt.Errorf("localstack: nats: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return errors.New("localstack: nats did not become ready")
	}
	s.nats = ns
	s.NATSURL = ns.ClientURL()
	return nil
}

func (s *Stack) startS3(ctx context.Context, bin string) error {
	s.S3Dir = filepath.Join(s.Dir, "s3")
	if err := os.MkdirAll(s.S3Dir, 0o755); err != nil {
		return err
	}
	port, err := freePort(cluster.HostIP)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(cluster.HostIP, strconv.Itoa(port))
	p, err := proc.Start("versitygw", s.LogDir, bin, []string{"--access", S3AccessKey, "--secret", S3SecretKey,
		"--region", S3Region, "--port", addr, "--quiet", "posix", s.S3Dir}, nil, 5*time.Second)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	s.S3URL = "http://" + addr
	return p.WaitFor(ctx, 20*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// startCatalog runs PostgreSQL on the host address, where the pods reach
// it, with a password login for CatalogUser (the pods' addresses) and
// trust for the postgres superuser from the host only.
func (s *Stack) startCatalog(ctx context.Context) error {
	c, err := pgserver.Init("jetsink-localstack-pg-")
	if err != nil {
		return err
	}
	s.pg = c
	hba := "local all all trust\n" +
		"host all postgres " + cluster.HostIP + "/32 trust\n" +
		"host all all 0.0.0.0/0 scram-sha-256\n"
	if err := c.WriteHBA(hba); err != nil {
		return err
	}
	port, err := freePort(cluster.HostIP)
	if err != nil {
		return err
	}
	p, err := proc.StartAs(c.Cred, "postgres", s.LogDir, filepath.Join(c.BinDir, "postgres"),
		c.ServerArgs(cluster.HostIP, port), nil, 5*time.Second)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	if err := p.WaitFor(ctx, 30*time.Second, func() bool { return c.Ready(cluster.HostIP, port) }); err != nil {
		return err
	}
	addr := net.JoinHostPort(cluster.HostIP, strconv.Itoa(port))
	db, err := sql.Open("pgx", "postgres://postgres@"+addr+"/postgres?sslmode=disable")
	if err != nil {
		return err
	}
	defer db.Close()
	for _, stmt := range []string{
		"CREATE ROLE " + CatalogUser + " LOGIN PASSWORD '" + CatalogPassword + "'",
		"CREATE DATABASE " + CatalogDatabase + " OWNER " + CatalogUser,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("localstack: postgres: %s: %w", stmt, err)
		}
	}
	s.CatalogAddr = addr
	s.CatalogURI = "postgres://" + CatalogUser + "@" + addr + "/" + CatalogDatabase + "?sslmode=disable"
	return nil
}

// installChart installs charts/jetsink as a user would, with the image
// imported into containerd (it cannot be pulled: the pods reach no
// registry) and the stack's status refresh.
func (s *Stack) installChart(ctx context.Context) error {
	repo, tag, _ := strings.Cut(s.Image, ":")
	args := append([]string{"install", Release, filepath.Join(s.opts.RepoRoot, "charts", "jetsink"),
		"--namespace", ManagerNamespace, "--create-namespace",
		"--set", "image.repository=" + repo, "--set", "image.tag=" + tag,
		"--set", "image.pullPolicy=Never",
		"--set", "statusRefresh=" + s.opts.StatusRefresh.String(),
		"--wait", "--timeout", "3m"}, s.opts.HelmArgs...)
	if _, err := s.Helm(ctx, args...); err != nil {
		return fmt.Errorf("localstack: %w; the manager's log:\n%s", err, s.managerLog(ctx))
	}
	return nil
}

func (s *Stack) managerLog(ctx context.Context) string {
	out, _ := s.Kubectl(ctx, nil, "logs", "-n", ManagerNamespace, "deploy/"+ManagerDeployment, "--tail=30")
	return out
}

// Helm runs bin/helm against the stack, with its caches in the stack's
// directory.
func (s *Stack) Helm(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.opts.RepoRoot, "bin", "helm"), args...)
	h := filepath.Join(s.Dir, "helm")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.Kubeconfig,
		"HELM_CACHE_HOME="+h+"/cache", "HELM_CONFIG_HOME="+h+"/config", "HELM_DATA_HOME="+h+"/data")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Stop stops everything Start started. The workers go first, drained as
// a user's would be: the operator is scaled to 0 (so it recreates
// nothing), the worker Deployments are deleted and their pods get their
// grace period to flush into S3 and ACK. Then the cluster, versitygw and
// NATS. The stack's directory is removed unless Options.Dir named it.
func (s *Stack) Stop() error {
	var errs []error
	if s.Client != nil {
		s.progress("stopping the workers (SIGTERM, then SIGKILL after their grace period)")
		errs = append(errs, s.drainWorkers())
	}
	if s.pods != nil {
		s.pods.stop()
		s.pods = nil
	}
	if s.Cluster != nil {
		errs = append(errs, s.Cluster.Stop())
		s.Cluster = nil
	}
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.progress("stopping " + s.procs[i].Name)
		s.procs[i].Stop()
	}
	s.procs = nil
	if s.pg != nil {
		s.pg.Remove()
		s.pg = nil
	}
	if s.nats != nil {
		s.progress("stopping NATS")
		s.nats.Shutdown()
		s.nats.WaitForShutdown()
		s.nats = nil
	}
	if s.removeDir {
		errs = append(errs, os.RemoveAll(s.Dir))
	}
	return errors.Join(errs...)
}

func (s *Stack) drainWorkers() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mgr := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ManagerNamespace, Name: ManagerDeployment}}
	err := s.Client.Patch(ctx, mgr, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":0}}`)))
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("localstack: scale the operator to 0: %w", err)
	}
	// A manager still stopping would recreate what is deleted next.
	if err := s.waitNoPods(ctx, client.InNamespace(ManagerNamespace),
		client.MatchingLabels{"app.kubernetes.io/component": "manager"}); err != nil {
		return err
	}
	workers := client.MatchingLabels{workload.LabelName: workload.WorkerName}
	// The kubelet removes a pod's log with the pod: follow each worker's
	// log to the end of its drain, into LogDir/pods.
	followed := s.followLogs(ctx, workers)
	defer followed()
	var list appsv1.DeploymentList
	if err := s.Client.List(ctx, &list, workers); err != nil {
		return err
	}
	for i := range list.Items {
		err := s.Client.Delete(ctx, &list.Items[i], client.PropagationPolicy(metav1.DeletePropagationBackground))
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return s.waitNoPods(ctx, workers)
}

// followLogs writes each matching pod's log to LogDir/pods/<ns>_<pod>.log
// until its container ends; the returned func waits for that (at most a
// few seconds once the pods are gone).
func (s *Stack) followLogs(ctx context.Context, opts ...client.ListOption) (wait func()) {
	var pods corev1.PodList
	if err := s.Client.List(ctx, &pods, opts...); err != nil {
		return func() {}
	}
	dir := filepath.Join(s.LogDir, "pods")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return func() {}
	}
	var done []chan struct{}
	for _, p := range pods.Items {
		f, err := os.Create(filepath.Join(dir, p.Namespace+"_"+p.Name+".log"))
		if err != nil {
			continue
		}
		cmd := exec.CommandContext(ctx, filepath.Join(s.opts.RepoRoot, "bin", "kubectl"), "logs", "-f", "-n", p.Namespace, p.Name)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+s.Kubeconfig)
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			f.Close()
			continue
		}
		d := make(chan struct{})
		done = append(done, d)
		go func() { _ = cmd.Wait(); f.Close(); close(d) }()
	}
	return func() {
		timeout := time.After(5 * time.Second)
		for _, d := range done {
			select {
			case <-d:
			case <-timeout:
				return // ctx's end kills what is left
			}
		}
	}
}

func (s *Stack) waitNoPods(ctx context.Context, opts ...client.ListOption) error {
	for {
		var pods corev1.PodList
		if err := s.Client.List(ctx, &pods, opts...); err != nil {
			return err
		}
		if len(pods.Items) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("localstack: %d pods (%s...) still running: %w", len(pods.Items), pods.Items[0].Name, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Kubectl runs bin/kubectl against the stack and returns its combined output.
func (s *Stack) Kubectl(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.opts.RepoRoot, "bin", "kubectl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.Kubeconfig)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// S3Client is a client of the stack's S3 as its root account.
func (s *Stack) S3Client() *s3.Client {
	return s3.New(s3.Options{
		Region: S3Region, BaseEndpoint: aws.String(s.S3URL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(S3AccessKey, S3SecretKey, ""),
	})
}

// CreateBucket creates an S3 bucket.
func (s *Stack) CreateBucket(ctx context.Context, bucket string) error {
	_, err := s.S3Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket})
	return err
}

// EnsureNamespace creates a namespace if it does not exist.
func (s *Stack) EnsureNamespace(ctx context.Context, name string) error {
	err := s.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// S3Secret returns a Secret with the stack's S3 credentials, in the keys
// destination.credentialsSecretRef expects.
func S3Secret(namespace, name, accessKey, secretKey string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		StringData: map[string]string{"AWS_ACCESS_KEY_ID": accessKey, "AWS_SECRET_ACCESS_KEY": secretKey},
	}
}

// CatalogSecret is the Secret a table sink's credentialsSecretRef names:
// the password of CatalogUser.
func CatalogSecret(namespace, name string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		StringData: map[string]string{"password": CatalogPassword},
	}
}

// freePort returns a free TCP port on host.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
