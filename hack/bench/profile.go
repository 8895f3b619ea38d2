package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetsink/jetsink/sinkworker"
)

// The worker serves no pprof endpoint, so its CPU profile is taken by
// running the very same sinkworker.Worker (default settings) inside this
// process under a pprof label, against the same stack and data. The label
// is inherited by every goroutine the worker starts (its NATS connection's
// reader and flusher included), so `-tagfocus` separates the worker from
// the in-process NATS server sharing the profile.

type profileResult struct {
	path    string
	rate    float64
	top     []string // flat top entries, worker only
	summary []string // cumulative share of the pipeline's stages
	metrics string   // the worker's own counters: flushes, files, waits
}

// workerStats summarises the in-process worker's metrics: how batches were
// cut, how big the files were and how long a flush took.
func workerStats(reg *prometheus.Registry) string {
	mfs, err := reg.Gather()
	if err != nil {
		return err.Error()
	}
	var files, rows, flushSum, flushCount, peak float64
	reasons := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "jetsink_files_written_total":
				files = m.GetCounter().GetValue()
			case "jetsink_file_rows_total":
				rows = m.GetCounter().GetValue()
			case "jetsink_buffered_bytes_peak":
				peak = m.GetGauge().GetValue()
			case "jetsink_flushes_total":
				reasons[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			case "jetsink_flush_duration_seconds":
				flushSum += m.GetHistogram().GetSampleSum()
				flushCount += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	var cuts []string
	for _, r := range []string{"max_events", "max_bytes", "max_age", "memory", "ack_pending", "idle", "caught_up", "shutdown"} {
		if reasons[r] > 0 {
			cuts = append(cuts, fmt.Sprintf("%s %.0f", r, reasons[r]))
		}
	}
	return fmt.Sprintf("%.0f files, %.0f rows/file, mean flush (encode+upload) %.1f ms, batches cut by: %s, peak buffered %.0f MiB",
		files, rows/max(files, 1), 1000*flushSum/max(flushCount, 1), strings.Join(cuts, ", "), peak/(1<<20))
}

func (s *stack) profileWorker(ctx context.Context, total uint64) (*profileResult, error) {
	run := sinkRun{name: "profile", procs: 1} // the default settings, as the headline run
	cfg, want := s.workerConfig(run)
	cfg.MetricsAddr = "127.0.0.1:0"
	cons, err := s.js.CreateOrUpdateConsumer(ctx, streamName, want)
	if err != nil {
		return nil, err
	}
	for _, kv := range s.s3Env() {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	// The worker sets the Go memory limit from its buffer cap, but here the
	// NATS server shares the process and the limit: the profile then showed
	// the GC and the scavenger (madvise) fighting over a heap the worker
	// alone never has. A set GOMEMLIMIT makes the worker leave it alone (the
	// runtime read it at startup, so this changes nothing else).
	os.Setenv("GOMEMLIMIT", "off")
	reg := prometheus.NewRegistry()
	w, err := sinkworker.New(cfg, sinkworker.Options{
		Logger:   slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Registry: reg,
	})
	if err != nil {
		return nil, err
	}
	res := &profileResult{path: filepath.Join(s.dir, "worker.cpu.pprof")}
	f, err := os.Create(res.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, err
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go pprof.Do(wctx, pprof.Labels("component", "worker"), func(ctx context.Context) { done <- w.Run(ctx) })
	err = waitDrained(ctx, cons, total, done)
	elapsed := time.Since(start)
	pprof.StopCPUProfile()
	stop()
	if err == nil {
		err = <-done
	}
	if err != nil {
		return nil, err
	}
	res.rate = float64(total) / elapsed.Seconds()
	res.metrics = workerStats(reg)
	res.top, res.summary, err = topEntries(res.path)
	return res, err
}

func waitDrained(ctx context.Context, cons jetstream.Consumer, total uint64, exited <-chan error) error {
	deadline := time.Now().Add(time.Duration(max(120, total/2000)) * time.Second)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			return fmt.Errorf("worker stopped early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream >= total {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not drained: pending %d, unacknowledged %d", info.NumPending, info.NumAckPending)
		}
	}
}

// stages group the profile's cumulative entries into the pipeline's steps.
var stages = []struct{ name, re string }{
	{"fetch (nats.go reader)", `^github\.com/nats-io/nats(%2e|\.)go\.\(\*Conn\)\.readLoop$`},
	{"fetch (iterator Next)", `^github\.com/nats-io/nats\.go/jetstream\.\(\*pullSubscription\)\.Next$`},
	{"fetch+decode+batch (fetcher.handle)", `^github\.com/jetsink/jetsink/sinkworker\.\(\*fetcher\)\.handle$`},
	{"write (flush: encode+upload+ack)", `^github\.com/jetsink/jetsink/sinkworker\.\(\*Worker\)\.flush$`},
	{"new parquet writers (free-list misses)", `^github\.com/parquet-go/parquet-go\.NewGenericWriter\[[^]]*\]$`},
	{"allocation (mallocgc)", `^runtime\.mallocgc$`},
	{"msg metadata (reply parse)", `^github\.com/nats-io/nats\.go/jetstream\.\(\*jetStreamMsg\)\.Metadata$`},
	{"decode (sinkworker decoder)", `^github\.com/jetsink/jetsink/sinkworker\.\(\*decoder\)\.decode$`},
	{"batch (batcher.add)", `^github\.com/jetsink/jetsink/sinkworker\.\(\*batcher\)\.add$`},
	{"encode (parquet-go)", `^github\.com/jetsink/jetsink/sinkworker\.\(\*encoder\)\.encode$`},
	{"upload (S3 PutObject)", `^github\.com/jetsink/jetsink/sinkworker\.\(\*uploader\)\.put$`},
	{"ack (Msg.Ack + flush)", `^github\.com/jetsink/jetsink/sinkworker\.\(\*acker\)\.ack$`},
	{"lease (InProgress)", `^github\.com/jetsink/jetsink/sinkworker\.\(\*batcher\)\.tick$`},
	{"socket writes", `^internal/poll\.\(\*FD\)\.Write$`},
}

var topLine = regexp.MustCompile(`^\s*([0-9.]+(?:[mun]?s|min|h)?)\s+([0-9.]+%)\s+([0-9.]+%)\s+([0-9.]+(?:[mun]?s|min|h)?)\s+([0-9.]+%)\s+(.+)$`)

// topEntries runs `go tool pprof` on the worker's samples: the flat top 15
// and the cumulative share of each pipeline stage.
func topEntries(path string) (top, summary []string, err error) {
	flat, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=15", "-tagfocus=component=worker", path).Output()
	if err != nil {
		return nil, nil, fmt.Errorf("go tool pprof: %w", err)
	}
	for _, line := range strings.Split(string(flat), "\n") {
		if m := topLine.FindStringSubmatch(line); m != nil {
			top = append(top, fmt.Sprintf("%7s %6s flat  %6s cum  %s", m[1], m[2], m[5], m[6]))
		} else if strings.HasPrefix(line, "Showing nodes") {
			top = append([]string{strings.TrimSpace(line)}, top...)
		}
	}
	cum, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount=400", "-tagfocus=component=worker", path).Output()
	if err != nil {
		return nil, nil, fmt.Errorf("go tool pprof: %w", err)
	}
	for _, st := range stages {
		re := regexp.MustCompile(st.re)
		for _, line := range strings.Split(string(cum), "\n") {
			if m := topLine.FindStringSubmatch(line); m != nil && re.MatchString(m[6]) {
				summary = append(summary, fmt.Sprintf("%-40s %6s cum", st.name, m[5]))
				break
			}
		}
	}
	tags, err := exec.Command("go", "tool", "pprof", "-tags", path).Output()
	if err != nil {
		return nil, nil, fmt.Errorf("go tool pprof: %w", err)
	}
	if m := regexp.MustCompile(`component: Total (\S+) of (\S+) \(([0-9.]+%)\)`).FindSubmatch(tags); m != nil {
		summary = append(summary, fmt.Sprintf("%-40s %6s of %s sampled (the rest: NATS server, GC)", "worker goroutines (label)", m[3], m[2]))
	}
	// GC runs on runtime goroutines that carry no label: its share is
	// read from the whole profile (worker and in-process NATS server).
	all, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount=400", path).Output()
	if err != nil {
		return nil, nil, fmt.Errorf("go tool pprof: %w", err)
	}
	for _, line := range strings.Split(string(all), "\n") {
		if m := topLine.FindStringSubmatch(line); m != nil && m[6] == "runtime.gcBgMarkWorker" {
			summary = append(summary, fmt.Sprintf("%-40s %6s cum of the whole process (GC is unlabelled)", "garbage collection (background mark)", m[5]))
		}
		if strings.HasPrefix(line, "Duration:") {
			summary = append(summary, "whole process: "+strings.TrimSpace(line))
		}
	}
	return top, summary, nil
}

// consumeCeiling is the consume+ACK rate of a bare nats.go loop on the same
// stream and data: one pull consumer, explicit ACK of every message, no
// decoding and no writing. A cross-check of the nats bench figure.
func (s *stack) consumeCeiling(ctx context.Context, total uint64) (float64, error) {
	cons, err := s.js.CreateOrUpdateConsumer(ctx, streamName, jetstream.ConsumerConfig{
		Durable: "ceiling-go", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1 << 20,
	})
	if err != nil {
		return 0, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(500))
	if err != nil {
		return 0, err
	}
	defer it.Stop()
	start := time.Now()
	for n := uint64(0); n < total; {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrNoHeartbeat) {
			continue // a busy machine; the iterator re-pulls on its own
		}
		if err != nil {
			return 0, err
		}
		n++
		if err := msg.Ack(); err != nil {
			return 0, err
		}
	}
	if err := waitDrained(ctx, cons, total, nil); err != nil {
		return 0, err
	}
	return float64(total) / time.Since(start).Seconds(), nil
}
