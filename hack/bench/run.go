package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsink/jetsink/hack/bench/eventgen"
)

type options struct {
	root                                    string
	events, memEvents, sinks                int
	seed                                    uint64
	quiet                                   time.Duration
	maxAge                                  time.Duration // batch.maxAge of every sink run; 0 is the worker's default
	scaling, profile                        bool
	natsCLI, sinkworker, manager, versitygw string
	assets, dir                             string
	keep                                    bool
	workerEnv                               []string // extra KEY=VALUE for the worker processes (experiments)
	perDay                                  int      // generator's events per day of timestamps; 0 means events
	controllerOnly                          bool     // skip the sink runs (the references still run)
}

// report is everything measured; print renders it.
type report struct {
	opts        options
	started     time.Time
	preloadRate float64
	jsonBytes   float64 // average body
	micro       *microResult
	natsBench   float64 // nats bench js consume msgs/s; 0 when not run
	goCeiling   float64
	main        *sinkResult
	mainCheck   verification
	declared    *sinkResult // the main run's events through a 10-column declared schema
	table       *sinkResult // the main run's events committed to an Iceberg table
	scaling     []*sinkResult
	checks      map[string]verification
	prof        *profileResult
	mem         *sinkResult
	ctrl        *controllerResult
	dir         string
	notes       []string
}

func (r *report) ceiling() float64 {
	if r.natsBench > 0 {
		return r.natsBench
	}
	return r.goCeiling
}

// step prints progress on stderr, so stdout is the table alone.
func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, o options, _ io.Writer) (*report, error) {
	rep := &report{opts: o, started: time.Now(), checks: map[string]verification{}}
	for _, p := range []string{o.sinkworker, o.versitygw} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s is missing: run `make build` and `./hack/tools/install.sh versitygw`", p)
		}
	}
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "jetsink-bench-")
		if err != nil {
			return nil, err
		}
		dir = d
		if !o.keep {
			defer os.RemoveAll(dir)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rep.dir = dir
	s, err := startStack(ctx, dir, o.versitygw)
	if err != nil {
		return nil, err
	}
	defer s.stop()

	perDay := o.perDay
	if perDay == 0 {
		perDay = o.events
	}
	gen := eventgen.New(o.seed, perDay)
	step("pre-loading %d events into stream %s", o.events, streamName)
	t0 := time.Now()
	total, err := s.preload(ctx, gen, 0, o.events)
	if err != nil {
		return nil, err
	}
	rep.preloadRate = float64(o.events) / time.Since(t0).Seconds()

	step("Go benchmarks: raw JSON decode, raw parquet-go zstd encode")
	m := runMicro(o.seed, perDay)
	rep.micro = &m

	if o.natsCLI != "" {
		// A shared machine only ever makes a run slower, so the best of a
		// few runs is the ceiling; a single run swung from 97k to 127k
		// msg/s between otherwise identical bench runs.
		for i := range ceilingRuns {
			step("nats bench js consume --acks explicit --size 300 (%s), run %d of %d", o.natsCLI, i+1, ceilingRuns)
			// Its durable consumer is created once and kept: delete it, or
			// the next run finds everything already consumed.
			if err := s.js.DeleteConsumer(ctx, streamName, natsBenchConsumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return rep, err
			}
			rate, err := natsBench(ctx, o.natsCLI, s.natsURL(), total)
			if err != nil {
				return rep, err
			}
			rep.natsBench = max(rep.natsBench, rate)
		}
	}
	step("nats.go consume+ACK loop")
	if rep.goCeiling, err = s.consumeCeiling(ctx, total); err != nil {
		return rep, err
	}

	controller := func() error {
		if o.sinks == 0 {
			return nil
		}
		step("controller: %d WarehouseSinks on envtest, bin/manager as a process, %s quiet window", o.sinks, o.quiet)
		var err error
		rep.ctrl, err = s.benchController(ctx, o.root, o.assets, o.manager, o.sinks, o.quiet)
		return err
	}
	drain := func(run sinkRun, n uint64, full bool) (*sinkResult, verification, error) {
		step("sink run %q: %d events, workersPerReplica %s, %d process(es)", run.name, n, workersLabel(run.workers), run.procs)
		res, err := s.drain(ctx, o.sinkworker, run, n, o.workerEnv)
		if err != nil {
			return nil, verification{}, err
		}
		v, err := s.verify(ctx, res.prefix, n, full)
		if err != nil {
			return res, v, err
		}
		if !v.ok(n) {
			return res, v, fmt.Errorf("run %s: bucket does not hold every event exactly once: %s", run.name, v)
		}
		return res, v, nil
	}
	// drainTable is drain for a table run: the table must hold every
	// event once, as a reader that is not iceberg-go sees it, and its
	// data files (all of them: a clean drain leaves no orphan) too.
	drainTable := func(run sinkRun, n uint64) (*sinkResult, verification, error) {
		step("sink run %q: %d events into an Iceberg table, %d process(es)", run.name, n, run.procs)
		res, err := s.drain(ctx, o.sinkworker, run, n, o.workerEnv)
		if err != nil {
			return nil, verification{}, err
		}
		tbl, err := s.readTable(ctx, run.name)
		if err != nil {
			return res, verification{}, err
		}
		if tbl.Rows() != int64(n) {
			return res, verification{}, fmt.Errorf("run %s: the table holds %d rows, want %d", run.name, tbl.Rows(), n)
		}
		res.snapshots = len(tbl.Snapshots)
		prefix := strings.TrimPrefix(tbl.Location, "s3://"+bucket+"/") + "/data/"
		v, err := s.verify(ctx, prefix, n, true)
		if err == nil && !v.ok(n) {
			err = fmt.Errorf("run %s: the table's data files do not hold every event exactly once: %s", run.name, v)
		}
		return res, v, err
	}
	if o.controllerOnly {
		return rep, controller()
	}
	if rep.main, rep.mainCheck, err = drain(sinkRun{name: "default", procs: 1, maxAge: o.maxAge}, total, true); err != nil {
		return rep, err
	}
	var v verification
	if rep.declared, v, err = drain(sinkRun{name: "declared", procs: 1, maxAge: o.maxAge, schema: declaredSchema()}, total, true); err != nil {
		return rep, err
	}
	rep.checks["declared"] = v
	if rep.table, v, err = drainTable(sinkRun{name: "iceberg", procs: 1, maxAge: o.maxAge, table: true}, total); err != nil {
		return rep, err
	}
	rep.checks["iceberg"] = v
	if o.scaling {
		for _, r := range []sinkRun{
			{name: "w1", workers: 1, procs: 1, maxAge: o.maxAge},
			{name: "w2", workers: 2, procs: 1, maxAge: o.maxAge},
			{name: "w4", workers: 4, procs: 1, maxAge: o.maxAge},
			{name: "p2", procs: 2, maxAge: o.maxAge},
		} {
			res, v, err := drain(r, total, false)
			if err != nil {
				return rep, err
			}
			rep.scaling = append(rep.scaling, res)
			rep.checks[r.name] = v
		}
	}
	if o.profile {
		step("CPU profile of the worker (in process, %d events)", total)
		if rep.prof, err = s.profileWorker(ctx, total); err != nil {
			return rep, err
		}
	}

	memTotal := total
	if o.memEvents > o.events {
		step("extending the stream to %d events", o.memEvents)
		if memTotal, err = s.preload(ctx, gen, o.events, o.memEvents); err != nil {
			return rep, err
		}
	}
	if rep.mem, v, err = drain(sinkRun{name: "memory", procs: 1, maxAge: o.maxAge}, memTotal, false); err != nil {
		return rep, err
	}
	rep.checks["memory"] = v

	return rep, controller()
}

func workersLabel(n int) string {
	if n == 0 {
		return "default"
	}
	return strconv.Itoa(n)
}

var msgsPerSec = regexp.MustCompile(`stats: ([0-9,]+) msgs/sec`)

// ceilingRuns is how many times `nats bench` runs; the best one counts.
const ceilingRuns = 3

// natsBenchConsumer is the durable `nats bench js consume` creates and
// keeps (natscli's default name).
const natsBenchConsumer = "nats-bench"

// natsBench runs `nats bench js consume` against the bench's stream with
// its own durable consumer, and returns its aggregate msgs/s.
func natsBench(ctx context.Context, bin, url string, total uint64) (float64, error) {
	if _, err := os.Stat(bin); err != nil {
		return 0, fmt.Errorf("%s is missing: run `./hack/tools/install.sh nats` (or pass -nats '' to use the nats.go loop as the ceiling)", bin)
	}
	cmd := exec.CommandContext(ctx, bin, "bench", "js", "consume", "--server", url,
		"--stream", streamName, "--msgs", strconv.FormatUint(total, 10),
		"--acks", "explicit", "--size", "300", "--no-progress")
	cmd.Env = append(os.Environ(), "NATS_CONTEXT=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("nats bench: %v\n%s", err, out)
	}
	m := msgsPerSec.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("nats bench printed no rate:\n%s", out)
	}
	return strconv.ParseFloat(strings.ReplaceAll(string(m[1]), ",", ""), 64)
}

func (r *report) summary() string {
	var sink, ratio, rss, capMiB, conv, writes float64
	if r.main != nil {
		sink = r.main.rate
		if c := r.ceiling(); c > 0 {
			ratio = sink / c
		}
	}
	if r.mem != nil {
		rss, capMiB = r.mem.rssMiB, r.mem.capMiB
	}
	if r.ctrl != nil {
		conv = r.ctrl.converge.Seconds()
		writes = r.ctrl.quietWrites / r.ctrl.quiet.Minutes()
	}
	return fmt.Sprintf("bench: sink=%.0f ceiling=%.0f ratio=%.2f rss_mib=%.0f cap_mib=%.0f sinks_converge_s=%.1f quiet_writes_per_min=%.1f",
		sink, r.ceiling(), ratio, rss, capMiB, conv, writes)
}

func (r *report) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")) }
	f0 := func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }
	fmt.Fprintf(w, "\njetsink bench — %d events (seed %d), %d CPUs, %s\n\n", r.opts.events, r.opts.seed, numCPU(), r.started.UTC().Format(time.RFC3339))
	row("measure", "value", "unit", "note")
	row("preload (JetStream async publish)", f0(r.preloadRate), "msg/s", "file store, not a target")
	if r.natsBench > 0 {
		row("ceiling: nats bench js consume", f0(r.natsBench), "msg/s", fmt.Sprintf("--acks explicit --size 300, same stream, best of %d", ceilingRuns))
	}
	if r.goCeiling > 0 {
		row("ceiling: nats.go consume+ACK loop", f0(r.goCeiling), "msg/s", "one goroutine, same stream")
	}
	if m := r.micro; m != nil {
		row("raw JSON decode (encoding/json)", f0(m.decodePerSec), "events/s/core", "envelope + timestamp + row")
		row("raw parquet-go encode (zstd)", f0(m.encodePerSec), "rows/s/core", fmt.Sprintf("files of %d rows, %.1f%% of JSON size", rowsPerFile, 100*m.encodeRatio))
	}
	sinkRow := func(label string, res *sinkResult, v verification) {
		if res == nil {
			return
		}
		ratio := ""
		if c := r.ceiling(); c > 0 {
			ratio = fmt.Sprintf("%.2f× ceiling, ", res.rate/c)
		}
		secs := res.elapsed.Seconds()
		row(label, f0(res.rate), "events/s", fmt.Sprintf("%s%.1fs; cores: worker %.2f, NATS %.2f, S3 %.2f; %.0f events/worker-CPU-s; RSS %.0f MiB; %s", ratio,
			secs, res.cpuSeconds/secs, res.natsCPU/secs, res.s3CPU/secs, float64(res.events)/res.cpuSeconds, res.rssMiB, v))
	}
	if r.main != nil {
		label := "sink: 1 process, default settings"
		if r.opts.maxAge > 0 {
			label = "sink: 1 process, default but maxAge"
		}
		sinkRow(fmt.Sprintf("%s (workers %d, maxAge %s)", label, r.main.cfg.Workers, r.main.cfg.BatchMaxAge), r.main, r.mainCheck)
	}
	if d := r.declared; d != nil && r.main != nil {
		sinkRow(fmt.Sprintf("sink: the same, declared schema of %d columns (%.2f× the envelope's; target ≥ 0.80)",
			len(d.cfg.Schema.Columns), d.rate/r.main.rate), d, r.checks["declared"])
	}
	if t := r.table; t != nil && r.main != nil {
		sinkRow(fmt.Sprintf("sink: the same, committed to an Iceberg table, SQL catalog on PostgreSQL (%.2f× the plain files'; target ≥ 0.90; %d snapshots, commitInterval %s, %.0f ms a commit)",
			t.rate/r.main.rate, t.snapshots, t.cfg.Table.Interval(), 1000*t.commitSeconds/max(t.commits, 1)), t, r.checks["iceberg"])
	}
	for _, res := range r.scaling {
		label := fmt.Sprintf("scaling: workersPerReplica %d", res.cfg.Workers)
		if res.run.procs > 1 {
			label = fmt.Sprintf("scaling: %d processes × %d workers", res.run.procs, res.cfg.Workers)
		}
		label += fmt.Sprintf(", maxAge %s", res.cfg.BatchMaxAge)
		sinkRow(label, res, r.checks[res.run.name])
	}
	if p := r.prof; p != nil {
		row("sink in process (profiled), default settings", f0(p.rate), "events/s", "NATS server in the same process")
	}
	if m := r.mem; m != nil {
		sinkRow(fmt.Sprintf("memory run: %d-event backlog", m.events), m, r.checks["memory"])
		row("worker peak RSS (VmHWM)", fmt.Sprintf("%.0f", m.rssMiB), "MiB", fmt.Sprintf("cap %.0f MiB (MAX_BUFFERED_BYTES); target ≤ cap+100 = %.0f", m.capMiB, m.capMiB+100))
	}
	if c := r.ctrl; c != nil {
		note := "every Deployment created, every status written; target ≤ 60"
		if c.unconverged != "" {
			note = c.unconverged
		}
		row(fmt.Sprintf("controller: %d sinks converge", c.sinks), fmt.Sprintf("%.1f", c.converge.Seconds()), "s", note)
		row("controller: manager peak RSS", fmt.Sprintf("%.0f", c.rssMiB), "MiB", "target ≤ 200")
		row("controller: reconciles to converge", f0(c.reconciles), "", fmt.Sprintf("%.2f per sink, %.0f errors", c.reconciles/float64(c.sinks), c.errors))
		row(fmt.Sprintf("controller: reconciles in %s quiet", c.quiet), f0(c.quietRecons), "", "target 0")
		row(fmt.Sprintf("controller: sink writes in %s quiet", c.quiet), fmt.Sprintf("%.1f", c.quietWrites/c.quiet.Minutes()), "/min",
			fmt.Sprintf("%.0f writes (%.0f by the lag refresher); target 0 when no lag moves", c.quietWrites, c.quietLag))
	}
	tw.Flush()
	if p := r.prof; p != nil {
		fmt.Fprintf(w, "\nworker CPU profile (%s, -tagfocus=component=worker)\n", p.path)
		fmt.Fprintln(w, "  worker metrics: "+p.metrics)
		for _, l := range p.summary {
			fmt.Fprintln(w, "  "+l)
		}
		fmt.Fprintln(w)
		for _, l := range p.top {
			fmt.Fprintln(w, "  "+l)
		}
	}
	for _, n := range r.notes {
		fmt.Fprintln(w, "note:", n)
	}
	if r.opts.keep || r.opts.dir != "" {
		fmt.Fprintln(w, "\nlogs and profile kept in", r.dir)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, r.summary())
}

func numCPU() int { return runtime.NumCPU() }
