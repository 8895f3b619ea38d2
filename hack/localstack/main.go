// Command localstack runs jetsink's whole local stack on this machine —
// kube-apiserver + etcd with the WarehouseSink CRD, NATS JetStream, versitygw
// (S3), the operator and the pod runner standing in for a kubelet — until
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
	"syscall"

	"github.com/jetsink/jetsink/hack/localstack/stack"
)

func main() {
	dir := flag.String("dir", ".localstack", "Directory for the stack's files (kubeconfig, logs, NATS store, S3 objects); kept on exit.")
	manager := flag.String("manager", "", "The manager binary; default bin/manager.")
	worker := flag.String("worker", "", "The sinkworker binary; default bin/sinkworker.")
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
	s, err := stack.Start(ctx, stack.Options{Dir: abs, Progress: os.Stdout, ManagerBinary: *manager, WorkerBinary: *worker})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := s.EnsureNamespace(ctx, "analytics"); err != nil {
		fmt.Fprintln(os.Stderr, "localstack:", err)
	}
	if err := s.Client.Create(ctx, stack.S3Secret("analytics", "s3-creds", stack.S3AccessKey, stack.S3SecretKey)); err != nil {
		fmt.Fprintln(os.Stderr, "localstack:", err)
	}
	fmt.Printf(`
localstack is up. In another shell:

  export KUBECONFIG=%s
  export PATH=%s:$PATH
  kubectl get sinks -A

  NATS JetStream:  %s       (nats --server %s stream ls)
  S3 (versitygw):  %s       access key %s, secret %s, region %s
                   objects are plain files under %s/<bucket>/
  Namespace "analytics" has Secret "s3-creds" with those S3 credentials.
  A sink's source.url is %s and destination.endpoint %s
  (with destination.forcePathStyle: true).
  Logs: %s (manager.log, versitygw.log, one file per worker pod)

Press Ctrl-C to stop everything.
`, s.Kubeconfig, binDir(), s.NATSURL, s.NATSURL, s.S3URL, stack.S3AccessKey,
		stack.S3SecretKey, stack.S3Region, s.S3Dir, s.NATSURL, s.S3URL, s.LogDir)
	<-ctx.Done()
	fmt.Println()
	if err := s.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "localstack:", err)
		os.Exit(1)
	}
	fmt.Println("localstack: stopped; files kept in", abs)
}

func binDir() string {
	root, err := stack.RepoRoot()
	if err != nil {
		return "bin"
	}
	return filepath.Join(root, "bin")
}
