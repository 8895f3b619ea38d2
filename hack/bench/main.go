// Command bench measures jetsink against the physical ceilings of the
// machine it runs on, in one run: `make bench`.
//
// It starts NATS JetStream (file store, in this process) and versitygw (S3,
// a child process) on loopback, pre-loads the stream with seeded analytics
// events (package eventgen), and then measures
//
//   - the sink: bin/sinkworker as a process with the settings the operator
//     renders for a default WarehouseSink, from its start to the last ACK
//     the server holds, every event then found in the bucket (Parquet
//     footers' row counts and every _stream_seq read back);
//   - the references on the same server and data: `nats bench js consume
//     --acks explicit --size 300` (natscli built by hack/tools), a bare
//     nats.go consume+ACK loop, and Go benchmarks of raw JSON decode and
//     raw parquet-go zstd encode of the same events;
//   - where the worker's time goes: a CPU profile of the same worker code
//     run in this process under a pprof label;
//   - scaling with workersPerReplica 1, 2, 4 and with 2 processes;
//   - memory: the worker's peak RSS (VmHWM) draining a larger backlog,
//     against its buffered-bytes cap;
//   - the controller: n WarehouseSinks on the envtest API server with
//     bin/manager as its own process.
//
// It prints a table and, last, one line for scripts:
//
//	bench: sink=<events/s> ceiling=<msg/s> ratio=<r> rss_mib=<peak> cap_mib=<cap> sinks_converge_s=<s> quiet_writes_per_min=<w>
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jetsink/jetsink/internal/testutil/s3test"
)

func main() {
	root, err := s3test.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	bin := filepath.Join(root, "bin")
	o := options{root: root}
	flag.IntVar(&o.events, "events", 1_000_000, "Events pre-loaded for the throughput runs (one day of timestamps).")
	flag.IntVar(&o.memEvents, "mem-events", 2_000_000, "Backlog drained for the memory run (the stream is extended to this many).")
	flag.IntVar(&o.perDay, "per-day", 0, "Events per day of generated timestamps (0: -events, so the throughput set spans one day).")
	flag.Uint64Var(&o.seed, "seed", 1, "Seed of the event generator.")
	flag.IntVar(&o.sinks, "sinks", 1000, "WarehouseSinks created for the controller benchmark (0 skips it).")
	flag.DurationVar(&o.quiet, "quiet", time.Minute, "Window after convergence over which reconciles and sink writes are counted (two lag refreshes at the manager's default 30 s).")
	flag.DurationVar(&o.maxAge, "max-age", 0, "Override batch.maxAge of every sink run (0 keeps the worker's default).")
	flag.BoolVar(&o.controllerOnly, "controller-only", false, "Run only the references and the controller benchmark.")
	flag.BoolVar(&o.scaling, "scaling", true, "Run the scaling runs (workersPerReplica 1 and 2, and 2 processes).")
	flag.BoolVar(&o.profile, "profile", true, "Profile the worker's CPU (an extra drain, in process).")
	flag.StringVar(&o.natsCLI, "nats", filepath.Join(bin, "nats"), "natscli binary for the `nats bench` ceiling; empty uses the nats.go loop as the ceiling.")
	flag.StringVar(&o.sinkworker, "sinkworker", filepath.Join(bin, "sinkworker"), "sinkworker binary.")
	flag.StringVar(&o.manager, "manager", filepath.Join(bin, "manager"), "manager binary.")
	flag.StringVar(&o.versitygw, "versitygw", filepath.Join(bin, "versitygw"), "versitygw binary.")
	flag.StringVar(&o.assets, "assets", bin, "Directory holding kube-apiserver and etcd for envtest.")
	flag.StringVar(&o.dir, "dir", "", "Working directory (NATS store, S3 objects, logs, profile); default a temporary one, removed unless -keep.")
	flag.BoolVar(&o.keep, "keep", false, "Keep the working directory.")
	flag.Func("worker-env", "KEY=VALUE added to every worker process's environment, for experiments (repeatable; e.g. GOMEMLIMIT=300MiB).", func(v string) error {
		o.workerEnv = append(o.workerEnv, v)
		return nil
	})
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, o, os.Stdout)
	if rep != nil {
		rep.print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
