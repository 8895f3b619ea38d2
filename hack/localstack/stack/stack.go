// Package stack starts jetsink's local stack — everything DESIGN.md lists
// under "Real components", on loopback and in one directory — and stops it
// again: etcd and kube-apiserver (the hack/tools binaries, through envtest)
// with the WarehouseSink CRD installed, a NATS JetStream server with a file
// store (in-process), versitygw with its posix backend (objects are plain
// files under <dir>/s3/<bucket>/), the operator's manager as its own process,
// and the pod runner that stands in for a kubelet.
//
// The localstack command, the demo and the end-to-end tests all start the
// stack through Start; nothing in the product imports it.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr"
	"github.com/nats-io/nats-server/v2/server"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/hack/localstack/podrunner"
	"github.com/jetsink/jetsink/internal/reporoot"
)

// Credentials of versitygw's root account; the stack's S3 Secret holds them.
const (
	S3AccessKey = "jetsink-local"
	S3SecretKey = "jetsink-local-secret"
	S3Region    = "us-east-1"
)

// Options configure Start. Zero values are sensible defaults.
type Options struct {
	// RepoRoot holds go.mod, bin/ and config/; default: found from the
	// working directory.
	RepoRoot string
	// Dir holds everything the stack writes (kubeconfig, logs, the NATS
	// store, the S3 files); default: a new temp dir, removed by Stop.
	Dir string
	// ManagerBinary and WorkerBinary default to bin/manager and
	// bin/sinkworker (built by `make build`).
	ManagerBinary, WorkerBinary string
	// StatusRefresh is the manager's --status-refresh; default 2s.
	StatusRefresh time.Duration
	// Progress receives one line per stage; default discards.
	Progress io.Writer
}

// Stack is a running local stack.
type Stack struct {
	// Dir holds the stack's files; Kubeconfig is the admin kubeconfig in it.
	Dir, Kubeconfig string
	// LogDir holds manager.log, versitygw.log and one log per worker pod.
	LogDir string
	// NATSURL is the JetStream server's client URL.
	NATSURL string
	// S3URL is versitygw's endpoint (path-style); S3Dir its posix root, one
	// directory per bucket.
	S3URL, S3Dir string
	// Config and Client talk to the API server as an admin.
	Config *rest.Config
	Client client.Client
	// Runner is the pod runner.
	Runner *podrunner.Runner

	opts       Options
	removeDir  bool
	env        *envtest.Environment
	nats       *server.Server
	procs      []*proc // started in order; stopped in reverse
	stopRunner context.CancelFunc
	runnerDone chan struct{}
	closers    []io.Closer
}

// Scheme knows the built-in kinds and WarehouseSink.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(jetsinkv1.AddToScheme(s))
	return s
}

// Start starts every component, in dependency order. On error, what was
// started is stopped again.
func Start(ctx context.Context, opts Options) (s *Stack, err error) {
	logf.SetLogger(logr.Discard()) // envtest logs only to say it started
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
	if opts.StatusRefresh == 0 {
		opts.StatusRefresh = 2 * time.Second
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	for _, b := range []string{opts.ManagerBinary, opts.WorkerBinary, filepath.Join(bin, "kube-apiserver"),
		filepath.Join(bin, "etcd"), filepath.Join(bin, "versitygw")} {
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

	s.progress("starting etcd and kube-apiserver (envtest) with the WarehouseSink CRD")
	if err := s.startAPIServer(); err != nil {
		return s, err
	}
	s.progress("starting NATS JetStream (file store)")
	if err := s.startNATS(); err != nil {
		return s, err
	}
	s.progress("starting versitygw (S3, posix backend)")
	if err := s.startS3(ctx, filepath.Join(bin, "versitygw")); err != nil {
		return s, err
	}
	s.progress("starting the operator (bin/manager)")
	if err := s.startManager(ctx); err != nil {
		return s, err
	}
	s.progress("starting the pod runner (stands in for a kubelet)")
	runnerLog, err := os.Create(filepath.Join(s.LogDir, "podrunner.log"))
	if err != nil {
		return s, err
	}
	s.closers = append(s.closers, runnerLog)
	s.Runner = podrunner.New(podrunner.Options{
		Logger:   Logger(runnerLog),
		Client:   s.Client,
		Commands: map[string]string{"sinkworker": opts.WorkerBinary},
		LogDir:   s.LogDir,
		// No instance metadata service on this host: the AWS SDK would
		// otherwise wait for one when a sink names no S3 credentials.
		ExtraEnv: []string{"AWS_EC2_METADATA_DISABLED=true"},
		Interval: 250 * time.Millisecond,
	})
	rctx, cancel := context.WithCancel(context.Background())
	s.stopRunner, s.runnerDone = cancel, make(chan struct{})
	go func() {
		defer close(s.runnerDone)
		s.Runner.Run(rctx)
	}()
	return s, nil
}

func (s *Stack) progress(msg string) {
	fmt.Fprintf(s.opts.Progress, "localstack: %s\n", msg)
}

func (s *Stack) startAPIServer() error {
	s.env = &envtest.Environment{
		BinaryAssetsDirectory: filepath.Join(s.opts.RepoRoot, "bin"),
		CRDDirectoryPaths:     []string{filepath.Join(s.opts.RepoRoot, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                Scheme(),
	}
	s.env.ControlPlaneStartTimeout = time.Minute
	cfg, err := s.env.Start()
	if err != nil {
		_ = s.env.Stop() // a refused CRD fails Start with the servers running
		s.env = nil
		return fmt.Errorf("localstack: start the API server: %w", err)
	}
	user, err := s.env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	s.Kubeconfig = filepath.Join(s.Dir, "kubeconfig")
	if err := os.WriteFile(s.Kubeconfig, kc, 0o600); err != nil {
		return err
	}
	s.Config = cfg
	s.Config.QPS, s.Config.Burst = 200, 400
	s.Client, err = client.New(s.Config, client.Options{Scheme: Scheme()})
	return err
}

func (s *Stack) startNATS() error {
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
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
	port, err := FreePort()
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p, err := s.startProc("versitygw", bin, []string{"--access", S3AccessKey, "--secret", S3SecretKey,
		"--region", S3Region, "--port", addr, "--quiet", "posix", s.S3Dir}, nil, 5*time.Second)
	if err != nil {
		return err
	}
	s.S3URL = "http://" + addr
	return p.waitFor(ctx, 20*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (s *Stack) startManager(ctx context.Context) error {
	probe, err := FreePort()
	if err != nil {
		return err
	}
	probeAddr := "127.0.0.1:" + strconv.Itoa(probe)
	p, err := s.startProc("manager", s.opts.ManagerBinary, []string{
		"--metrics-bind-address=0",
		"--health-probe-bind-address=" + probeAddr,
		"--status-refresh=" + s.opts.StatusRefresh.String(),
		"--worker-image=jetsink/sinkworker:local",
	}, []string{"KUBECONFIG=" + s.Kubeconfig}, 10*time.Second)
	if err != nil {
		return err
	}
	return p.waitFor(ctx, 30*time.Second, func() bool { return httpOK("http://" + probeAddr + "/readyz") })
}

// Stop stops everything Start started, in reverse order: the workers first
// (they drain into NATS and S3), then the operator, S3, NATS and the API
// server. The stack's directory is removed unless Options.Dir named it.
func (s *Stack) Stop() error {
	var errs []error
	if s.stopRunner != nil {
		s.progress("stopping the workers (SIGTERM, then SIGKILL after their grace period)")
		s.stopRunner()
		<-s.runnerDone
		s.stopRunner = nil
	}
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.progress("stopping " + s.procs[i].name)
		errs = append(errs, s.procs[i].stop())
	}
	s.procs = nil
	if s.nats != nil {
		s.progress("stopping NATS")
		s.nats.Shutdown()
		s.nats.WaitForShutdown()
		s.nats = nil
	}
	if s.env != nil {
		s.progress("stopping kube-apiserver and etcd")
		errs = append(errs, s.env.Stop())
		s.env = nil
	}
	for _, c := range s.closers {
		_ = c.Close()
	}
	s.closers = nil
	if s.removeDir {
		errs = append(errs, os.RemoveAll(s.Dir))
	}
	return errors.Join(errs...)
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

// proc is a child process of the stack with its log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	exited  chan struct{}
	err     error
	grace   time.Duration
	logPath string
}

func (s *Stack) startProc(name, bin string, args, env []string, grace time.Duration) (*proc, error) {
	logPath := filepath.Join(s.LogDir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// Own process group, and killed if this process dies without Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("localstack: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, exited: make(chan struct{}), grace: grace, logPath: logPath}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.exited)
	}()
	s.procs = append(s.procs, p)
	return p, nil
}

// waitFor polls ready until it holds, the process exits or the timeout.
func (p *proc) waitFor(ctx context.Context, timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ready() {
		select {
		case <-p.exited:
			return fmt.Errorf("localstack: %s exited: %v; its log:\n%s", p.name, p.err, tail(p.logPath, 30))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("localstack: %s not ready after %s; its log:\n%s", p.name, timeout, tail(p.logPath, 30))
		}
	}
	return nil
}

func (p *proc) stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(p.grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
	return nil
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func httpOK(url string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// FreePort returns a free loopback TCP port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Logger is a slog logger for the stack's own components.
func Logger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
