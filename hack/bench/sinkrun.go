package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the table runs' catalog
	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
	"github.com/jetsink/jetsink/hack/bench/eventgen"
	localstack "github.com/jetsink/jetsink/hack/localstack/stack"
	"github.com/jetsink/jetsink/internal/icebergread"
	"github.com/jetsink/jetsink/sinkworker/config"
)

const (
	streamName = "EVENTS"
	bucket     = "lake"
)

// preload appends events [from, to) of the seeded generator to the stream
// (creating it on first use) and returns the stream's last sequence.
func (s *stack) preload(ctx context.Context, gen *eventgen.Generator, from, to int) (uint64, error) {
	st, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: streamName, Subjects: []string{eventgen.SubjectPrefix + ">"}, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return 0, fmt.Errorf("create stream: %w", err)
	}
	js, err := jetstream.New(s.nc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		return 0, err
	}
	var buf []byte
	for i := from; i < to; i++ {
		ev := gen.Next(buf)
		buf = ev.Body
		// PublishAsync keeps the slice until acknowledged: copy it.
		if _, err := js.PublishAsync(ev.Subject(), append([]byte(nil), ev.Body...)); err != nil {
			return 0, fmt.Errorf("publish event %d: %w", i, err)
		}
		// Waiting every few thousand keeps the in-flight window under
		// the async publisher's limit, where it would stall and fail.
		if (i+1)%4096 == 0 || i+1 == to {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				return 0, errors.New("publishing stalled")
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	if info.State.Msgs != uint64(to) {
		return 0, fmt.Errorf("stream holds %d messages, want %d", info.State.Msgs, to)
	}
	return info.State.LastSeq, nil
}

// sinkRun is one end-to-end drain: fresh durable consumer over the whole
// stream, procs sinkworker processes, every event to its own prefix.
type sinkRun struct {
	name    string
	workers int // 0: the worker's default
	procs   int
	// maxAge overrides batch.maxAge when set (-max-age), for experiments.
	// The worker no longer makes the end of a backlog wait it out (its
	// caught-up and idle cuts), so every run uses the default.
	maxAge time.Duration
	// schema, when set, is the sink's declared schema (the envelope else).
	schema *config.Schema
	// table commits the files to an Iceberg table (the stack's SQL
	// catalog), run by sinkworker-iceberg, the operator's choice for such
	// sinks.
	table bool
}

// tableWarehouse is where the Iceberg runs' tables are; each run's table
// is bench.<run name>.
const tableWarehouse = "s3://" + bucket + "/warehouse"

// declaredSchema maps the generator's events onto 10 declared columns,
// partitioned by app_id as the envelope is: the same events and files, so
// the run measures the declared path against the envelope's.
func declaredSchema() *config.Schema {
	col := func(name, path, typ string) config.Column { return config.Column{Name: name, Path: path, Type: typ} }
	return &config.Schema{
		Columns: []config.Column{
			col("event_id", "", config.TypeString),
			col("app_id", "", config.TypeString),
			col("event", "", config.TypeString),
			col("timestamp", "", config.TypeTimestamp),
			col("user_id", "", config.TypeString),
			col("session_id", "", config.TypeString),
			col("page", "properties.page", config.TypeString),
			col("plan", "properties.plan", config.TypeString),
			col("value", "properties.value", config.TypeDouble),
			col("context", "", config.TypeJSON),
		},
		Time:        "timestamp",
		PartitionBy: []string{"app_id"},
	}
}

type sinkResult struct {
	run        sinkRun
	events     uint64
	elapsed    time.Duration
	rate       float64 // events/s, start of the processes to the last ACK
	cpuSeconds float64 // user+system of every worker process
	natsCPU    float64 // of this process meanwhile: the NATS server, mostly
	s3CPU      float64 // of versitygw meanwhile
	rssMiB     float64 // highest VmHWM of any one worker process
	capMiB     float64 // MaxBufferedBytes
	prefix     string
	cfg        config.Config
	warnings   int
	snapshots  int // a table run's snapshots at the end
	// A table run's commits, from the workers' metrics at the end.
	commits, commitSeconds float64
}

// workerConfig renders a default WarehouseSink for run the way the operator
// does (workload.WorkerConfig), so "default settings" means what a user gets.
func (s *stack) workerConfig(run sinkRun) (config.Config, jetstream.ConsumerConfig) {
	sink := &jetsinkv1.WarehouseSink{}
	sink.Name = run.name
	sink.Spec.Replicas = ptr.To(int32(run.procs))
	sink.Spec.WorkersPerReplica = int32(run.workers)
	sink.Spec.Source.URL = s.natsURL()
	sink.Spec.Source.Stream = streamName
	sink.Spec.Source.Consumer = "bench-" + run.name
	sink.Spec.Source.FilterSubjects = []string{eventgen.SubjectPrefix + ">"}
	sink.Spec.Destination.Bucket = bucket
	sink.Spec.Destination.Prefix = "runs/" + run.name + "/"
	sink.Spec.Destination.Endpoint = s.s3URL
	sink.Spec.Destination.ForcePathStyle = true
	if run.maxAge > 0 {
		sink.Spec.Batch.MaxAge = &metav1.Duration{Duration: run.maxAge}
	}
	if run.table {
		// The API's defaults, as the API server would fill them in.
		sink.Spec.Destination.Table = &jetsinkv1.TableSpec{
			Catalog:   jetsinkv1.CatalogSpec{Type: jetsinkv1.CatalogSQL, URI: s.pgDSN, Warehouse: tableWarehouse},
			Namespace: "bench", Name: run.name,
			CommitInterval: &metav1.Duration{Duration: 10 * time.Second}, MaxFilesPerCommit: 100,
		}
	}
	cfg := workload.WorkerConfig(sink)
	cfg.Schema = run.schema
	want := cfg.ConsumerConfig()
	want.MaxAckPending = workload.MaxAckPending(sink, cfg)
	return cfg, want
}

// drain runs the worker processes until the consumer has no pending and no
// unacknowledged message, then stops them with SIGTERM.
func (s *stack) drain(ctx context.Context, bin string, run sinkRun, total uint64, extraEnv []string) (*sinkResult, error) {
	cfg, want := s.workerConfig(run)
	cons, err := s.js.CreateOrUpdateConsumer(ctx, streamName, want)
	if err != nil {
		return nil, fmt.Errorf("create consumer: %w", err)
	}
	res := &sinkResult{run: run, events: total, prefix: cfg.Prefix, cfg: cfg,
		capMiB: float64(cfg.MaxBufferedBytes) / (1 << 20)}

	type proc struct {
		cmd     *exec.Cmd
		done    chan error
		log     string
		metrics string
	}
	var procs []*proc
	stopAll := func() {
		for _, p := range procs {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			select {
			case <-p.done:
			case <-time.After(cfg.ShutdownTimeout + 10*time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
	}
	if run.table {
		bin += "-iceberg" // sinkworker-iceberg, beside sinkworker
	}
	self0, _ := readProc(os.Getpid())
	gw0, _ := readProc(s.gw.Process.Pid)
	start := time.Now()
	for i := range run.procs {
		c := cfg
		c.MetricsAddr = "127.0.0.1:" + strconv.Itoa(freePort())
		env := append(os.Environ(), s.s3Env()...)
		for _, e := range c.Environ() {
			env = append(env, e.Name+"="+e.Value)
		}
		env = append(env, extraEnv...)
		logPath := filepath.Join(s.dir, fmt.Sprintf("worker-%s-%d.log", run.name, i))
		logf, err := os.Create(logPath)
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			stopAll()
			return nil, fmt.Errorf("start %s: %w", bin, err)
		}
		p := &proc{cmd: cmd, done: make(chan error, 1), log: logPath, metrics: "http://" + c.MetricsAddr + "/metrics"}
		go func() { p.done <- cmd.Wait(); logf.Close() }()
		procs = append(procs, p)
	}

	// The server's view is the truth: everything delivered and nothing
	// left unacknowledged means every event's ACK has arrived.
	timeout := time.Duration(max(120, total/2000)) * time.Second
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var cpu float64
	for {
		select {
		case <-ctx.Done():
			stopAll()
			return nil, ctx.Err()
		case <-tick.C:
		}
		for _, p := range procs {
			select {
			case err := <-p.done:
				p.done <- err
				stopAll()
				return nil, fmt.Errorf("worker exited early (%v): %s", err, tail(p.log, 2000))
			default:
			}
		}
		info, err := cons.Info(ctx)
		if err != nil {
			stopAll()
			return nil, err
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream >= total {
			res.elapsed = time.Since(start)
			break
		}
		if time.Since(start) > timeout {
			stopAll()
			return nil, fmt.Errorf("run %s: not drained after %s: pending %d, unacknowledged %d, acked up to %d of %d",
				run.name, timeout, info.NumPending, info.NumAckPending, info.AckFloor.Stream, total)
		}
	}
	for _, p := range procs {
		st, err := readProc(p.cmd.Process.Pid)
		if err != nil {
			return nil, err
		}
		res.rssMiB = max(res.rssMiB, st.hwmMiB)
		cpu += st.cpuSeconds
	}
	res.cpuSeconds = cpu
	self1, _ := readProc(os.Getpid())
	gw1, _ := readProc(s.gw.Process.Pid)
	res.natsCPU = self1.cpuSeconds - self0.cpuSeconds
	res.s3CPU = gw1.cpuSeconds - gw0.cpuSeconds
	res.rate = float64(total) / res.elapsed.Seconds()
	if run.table {
		for _, p := range procs {
			m, err := localstack.Scrape(ctx, p.metrics)
			if err != nil {
				stopAll()
				return nil, err
			}
			res.commits += m["jetsink_table_commit_duration_seconds_count"]
			res.commitSeconds += m["jetsink_table_commit_duration_seconds_sum"]
		}
	}
	stopAll()
	for _, p := range procs {
		b, _ := os.ReadFile(p.log)
		res.warnings += strings.Count(string(b), `"level":"WARN"`) + strings.Count(string(b), `"level":"ERROR"`)
	}
	return res, nil
}

type procStat struct {
	hwmMiB     float64
	rssMiB     float64
	cpuSeconds float64
}

// readProc reads a process's peak resident set (VmHWM) and CPU time.
func readProc(pid int) (procStat, error) {
	var st procStat
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "VmHWM:" || f[0] == "VmRSS:") {
			kb, _ := strconv.ParseFloat(f[1], 64)
			if f[0] == "VmHWM:" {
				st.hwmMiB = kb / 1024
			} else {
				st.rssMiB = kb / 1024
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	// Fields after the command name (which may hold spaces): utime is the
	// 14th field of the line, stime the 15th.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
	f := strings.Fields(rest)
	if len(f) > 12 {
		ut, _ := strconv.ParseFloat(f[11], 64)
		stt, _ := strconv.ParseFloat(f[12], 64)
		st.cpuSeconds = (ut + stt) / 100 // USER_HZ is 100 on Linux
	}
	return st, nil
}

// readTable reads the table bench.<name> with a reader that is not
// iceberg-go.
func (s *stack) readTable(ctx context.Context, name string) (*icebergread.Table, error) {
	db, err := sql.Open("pgx", s.pgDSN)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return icebergread.Load(ctx, db, "jetsink", "bench", name, icebergread.S3(s.s3))
}
