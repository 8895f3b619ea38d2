// Command localstack runs jetsink's whole local stack on this machine — a
// single-node Kubernetes (control plane, containerd, kubelet), NATS
// JetStream, versitygw (S3) and the operator installed by helm — until
// Ctrl-C, then stops everything it started. See package stack.
//
//	make build tools && go run ./hack/localstack [-dir .localstack]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/jetsink/jetsink/hack/localstack/stack"
	"github.com/jetsink/jetsink/internal/reporoot"
)

func main() {
	dir := flag.String("dir", ".localstack", "Directory for the stack's files (kubeconfig, logs, NATS store, S3 objects); kept on exit.")
	manager := flag.String("manager", "", "The manager binary; default bin/manager.")
	worker := flag.String("worker", "", "The sinkworker binary; default bin/sinkworker.")
	tableWorker := flag.String("table-worker", "", "The sinkworker-iceberg binary; default bin/sinkworker-iceberg.")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	abs, err := filepath.Abs(*dir)
	if err == nil {
		err = os.MkdirAll(abs, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "localstack:", err)
		os.Exit(1)
	}
	s, err := stack.Start(ctx, stack.Options{Dir: abs, Progress: os.Stdout, ManagerBinary: *manager, WorkerBinary: *worker,
		TableWorkerBinary: *tableWorker})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := seed(ctx, s); err != nil {
		fmt.Fprintln(os.Stderr, "localstack:", err)
	}
	r := strings.NewReplacer("{KUBECONFIG}", s.Kubeconfig, "{BIN}", binDir(), "{NATS}", s.NATSURL, "{S3}", s.S3URL,
		"{S3DIR}", s.S3Dir, "{LOGS}", s.LogDir, "{AK}", stack.S3AccessKey, "{SK}", stack.S3SecretKey, "{REGION}", stack.S3Region,
		"{CATALOG}", s.CatalogURI)
	fmt.Print(r.Replace(`
localstack is up. In another shell:

  export KUBECONFIG={KUBECONFIG}
  export PATH={BIN}:$PATH
  kubectl get sinks -A

  NATS JetStream:  {NATS}   streams EVENTS (events.>) and DLQ (dlq.>)
  S3 (versitygw):  {S3}   bucket "lake"; access key {AK}, secret {SK}, region {REGION}
                   objects are plain files under {S3DIR}/<bucket>/
  PostgreSQL:      {CATALOG}   the Iceberg SQL catalog
  Namespace "analytics" has Secret "s3-creds" with those S3 credentials and
  Secret "catalog-creds" with the catalog's password, so the demo's sinks
  apply as they are:

  sed -e 's|${NATS_URL}|{NATS}|' -e 's|${S3_ENDPOINT}|{S3}|' -e 's|${CATALOG_URI}|{CATALOG}|' hack/demo/sink.yaml | kubectl apply -f -

  Logs: kubectl logs (the manager: -n jetsink-system deploy/jetsink); the host
  processes (kubelet, containerd, the control plane, versitygw) in {LOGS}

Press Ctrl-C to stop everything.
`))
	<-ctx.Done()
	fmt.Println()
	if err := s.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "localstack:", err)
		os.Exit(1)
	}
	fmt.Println("localstack: stopped; files kept in", abs)
}

func binDir() string {
	root, err := reporoot.Find()
	if err != nil {
		return "bin"
	}
	return filepath.Join(root, "bin")
}

// seed creates what the demo's sink (hack/demo/sink.yaml) needs, so it can
// be applied as it is.
func seed(ctx context.Context, s *stack.Stack) error {
	nc, err := nats.Connect(s.NATSURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	for name, subj := range map[string]string{"EVENTS": "events.>", "DLQ": "dlq.>"} {
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj},
			Storage: jetstream.FileStorage}); err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
	}
	if err := s.CreateBucket(ctx, "lake"); err != nil && !strings.Contains(err.Error(), "BucketAlreadyOwnedByYou") {
		return fmt.Errorf("bucket lake: %w", err)
	}
	if err := s.EnsureNamespace(ctx, "analytics"); err != nil {
		return err
	}
	for _, secret := range []*corev1.Secret{
		stack.S3Secret("analytics", "s3-creds", stack.S3AccessKey, stack.S3SecretKey),
		stack.CatalogSecret("analytics", "catalog-creds"),
	} {
		if err := s.Client.Create(ctx, secret); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}
