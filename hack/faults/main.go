// Command faults is the fault matrix (`make faults`): it proves on real
// processes that the sink worker never loses an event.
//
// For every case it starts a fresh stack of its own, on loopback only:
// bin/nats-server (JetStream, file store in a temp dir, a random port),
// bin/versitygw (posix backend), bin/toxiproxy-server with one proxy in
// front of each, and bin/sinkworker as a process whose JETSINK_NATS_URL and
// JETSINK_S3_ENDPOINT point at the proxies (stack.go). The harness plays
// the operator: it creates the stream, the DLQ stream and the durable
// consumer (config.Config.ConsumerConfig) and runs the worker with
// JETSINK_CREATE_CONSUMER=false, restarting it whenever it exits, as
// Kubernetes would (worker.go). A case's script (cases.go) publishes events
// while it breaks something — stops or SIGKILLs a server, disables a proxy,
// adds a toxiproxy toxic, deletes a stream, SIGKILLs the worker — and then
// heals it. The harness waits for everything to show up, SIGTERMs the
// worker and takes the verdict (verdict.go) from reading every Parquet
// object back and every message of the DLQ stream, by event id
// (readback.go): lost (good events in no object), duplicated (extra
// rows), dead-lettered (DLQ messages). Worker metrics are printed for
// diagnosis only; the memory case's buffered_bytes_peak is the one
// exception, as the case is about that accounting.
//
// Each case is bounded in time and stops by itself; every process it
// started is stopped when it ends, fails or is interrupted (Ctrl-C). The
// exit status is non-zero when any case fails.
//
//	go run ./hack/faults [-case NAME[,NAME]] [-v] [-keep] [-list] [-worker PATH]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jetsink/jetsink/internal/reporoot"
)

func main() {
	only := flag.String("case", "", "run only these cases (comma-separated names or name prefixes, e.g. 4a or 4)")
	verbose := flag.Bool("v", false, "stream the worker's logs to stderr")
	keep := flag.Bool("keep", false, "keep every case's directory (logs, store, bucket), not only the failing ones'")
	list := flag.Bool("list", false, "list the cases and exit")
	workerBin := flag.String("worker", "", "the sinkworker binary to test (default bin/sinkworker)")
	flag.Parse()

	if *list {
		for _, c := range cases {
			fmt.Printf("%-22s %s\n", c.name, c.about)
		}
		return
	}
	selected, err := selectCases(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(2)
	}
	bins, err := findBinaries(*workerBin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(2)
	}
	root, err := os.MkdirTemp("", "jetsink-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	start := time.Now()
	fmt.Printf("fault matrix: %d cases, each on its own nats-server, versitygw, toxiproxy and sinkworker processes\n\n", len(selected))
	printHeader(os.Stdout)
	var results []*result
	for _, c := range selected {
		var also io.Writer
		if *verbose {
			also = &prefixWriter{prefix: "[" + c.name + "] ", w: os.Stderr}
		}
		r := runCase(ctx, bins, filepath.Join(root, c.name), c, also)
		if ctx.Err() != nil {
			break
		}
		results = append(results, r)
		printRow(os.Stdout, r)
		if r.pass && !*keep {
			os.RemoveAll(filepath.Join(root, c.name))
		}
	}
	killAll()
	if ctx.Err() != nil {
		fmt.Println("\ninterrupted: every process stopped")
		os.RemoveAll(root)
		os.Exit(130)
	}

	passed, failed := 0, 0
	for _, r := range results {
		if r.pass {
			passed++
		} else {
			failed++
		}
	}
	printDiagnosis(os.Stdout, results, root)
	if failed == 0 && !*keep {
		os.RemoveAll(root)
	} else {
		fmt.Printf("\nlogs, stores and buckets kept under %s\n", root)
	}
	fmt.Printf("\nmatrix took %s\n", time.Since(start).Round(time.Second))
	fmt.Printf("faults: %d passed, %d failed\n", passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}

func selectCases(only string) ([]*faultCase, error) {
	if only == "" {
		return cases, nil
	}
	var out []*faultCase
	for _, want := range strings.Split(only, ",") {
		n := 0
		for _, c := range cases {
			if c.name == want || strings.HasPrefix(c.name, want) {
				out = append(out, c)
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("no case %q (see -list)", want)
		}
	}
	return out, nil
}

func findBinaries(workerBin string) (binaries, error) {
	root, err := reporoot.Find()
	if err != nil {
		return binaries{}, err
	}
	bin := filepath.Join(root, "bin")
	b := binaries{
		nats:      filepath.Join(bin, "nats-server"),
		versitygw: filepath.Join(bin, "versitygw"),
		toxiproxy: filepath.Join(bin, "toxiproxy-server"),
		worker:    filepath.Join(bin, "sinkworker"),
		// Built with -tags iceberg (make faults): the table cases.
		icebergWorker: filepath.Join(bin, "sinkworker-iceberg"),
	}
	if workerBin != "" {
		b.worker = workerBin
	}
	for _, p := range []string{b.nats, b.versitygw, b.toxiproxy, b.worker, b.icebergWorker} {
		if _, err := os.Stat(p); err != nil {
			return b, fmt.Errorf("%s missing: run `make faults` (it builds the tools and bin/sinkworker)", p)
		}
	}
	return b, nil
}

// caseLimit bounds a case beyond its script and settle time.
const caseLimit = 4 * time.Minute

// runCase runs one case on a fresh stack and takes its verdict.
func runCase(parent context.Context, bins binaries, dir string, c *faultCase, also io.Writer) *result {
	r := &result{name: c.name}
	start := time.Now()
	defer func() { r.took = time.Since(start) }()
	ctx, cancel := context.WithTimeout(parent, caseLimit)
	defer cancel()

	s, err := startStack(ctx, bins, dir, c.opts, also)
	if err != nil {
		r.err = fmt.Errorf("stack: %w", err)
		return r
	}
	defer s.close()
	if !c.startsWorker {
		if err := s.worker.start(); err != nil {
			r.err = err
			return r
		}
		if !s.worker.waitReady(ctx, 30*time.Second) {
			r.note("worker not ready 30s after its start")
		}
	}
	if err := c.run(ctx, s, r); err != nil {
		r.err = fmt.Errorf("script: %w", err)
	}
	if parent.Err() != nil {
		return r
	}
	if took, ok := s.settle(ctx, c.settle); ok {
		r.note("all written %s after the script", took.Round(time.Second))
	} else {
		r.note("still incomplete %s after the script", took.Round(time.Second))
	}
	if c.check != nil {
		c.check(ctx, s, r)
	}
	r.metrics = s.worker.scrape()
	drain, err := s.worker.stop(s.cfg.ShutdownTimeout + 5*time.Second)
	if err != nil {
		r.note("final SIGTERM: %v after %s", err, drain.Round(100*time.Millisecond))
	}
	for _, peer := range s.peers {
		peer.signal(syscall.SIGCONT) // a case may have left it frozen
		if _, err := peer.stop(s.cfg.ShutdownTimeout + 5*time.Second); err != nil {
			r.note("%s's final SIGTERM: %v", peer.name, err)
		}
	}
	starts, killed, exits := s.worker.history()
	switch {
	case c.rebind && len(exits) == 0:
		r.note("worker re-bound without exiting")
	case c.rebind:
		r.note("worker exited %d× (%s) and was restarted", len(exits), strings.Join(exits, "; "))
	case len(exits) > 0:
		r.note("worker exited by itself %d× (%s), restarted", len(exits), strings.Join(exits, "; "))
	case killed > 0:
		r.note("worker SIGKILLed %d×, %d processes", killed, starts)
	case starts > 0:
		r.note("worker never exited")
	}
	r.problems = s.worker.problems(8)

	jctx, jcancel := context.WithTimeout(context.Background(), time.Minute)
	defer jcancel()
	if err := s.judge(jctx, c, r); err != nil && r.err == nil {
		r.err = fmt.Errorf("read back: %w", err)
	}
	r.pass = r.err == nil && len(r.failures) == 0
	return r
}

const rowFormat = "%-24s %10s %7s %5s %5s %6s  %-4s  %s\n"

func printHeader(w io.Writer) {
	fmt.Fprintf(w, rowFormat, "case", "published", "rows", "lost", "dup", "dlq", "", "note")
}

func printRow(w io.Writer, r *result) {
	verdict := "PASS"
	if !r.pass {
		verdict = "FAIL"
	}
	pub := fmt.Sprint(r.published)
	if r.poison > 0 {
		pub = fmt.Sprintf("%d+%dp", r.published, r.poison)
	}
	var notes []string
	if r.err != nil {
		notes = append(notes, "ERROR "+r.err.Error())
	}
	notes = append(notes, r.failures...)
	notes = append(notes, r.notes...)
	notes = append(notes, fmt.Sprintf("%d objects, %s", r.objects, r.took.Round(time.Second)))
	fmt.Fprintf(w, rowFormat, r.name, pub, fmt.Sprint(r.rows), fmt.Sprint(r.lost), fmt.Sprint(r.dup), fmt.Sprint(r.dlq),
		verdict, strings.Join(notes, "; "))
}

// diagnosisMetrics are printed under a failing case: what the worker says
// it did (not what the verdict is taken from).
var diagnosisMetrics = []string{
	"jetsink_events_received_total", "jetsink_events_acked_total", "jetsink_events_nacked_total",
	"jetsink_events_terminated_total", "jetsink_events_dead_lettered_total", "jetsink_ack_errors_total",
	"jetsink_files_written_total", "jetsink_s3_errors_total", "jetsink_buffered_bytes_peak",
}

func printDiagnosis(w io.Writer, results []*result, root string) {
	for _, r := range results {
		if r.pass {
			continue
		}
		fmt.Fprintf(w, "\n%s FAILED (logs: %s)\n", r.name, filepath.Join(root, r.name, "logs"))
		if r.metrics != nil {
			var parts []string
			for _, m := range diagnosisMetrics {
				if v, ok := r.metrics[m]; ok {
					parts = append(parts, fmt.Sprintf("%s=%.0f", strings.TrimPrefix(m, "jetsink_"), v))
				}
			}
			fmt.Fprintf(w, "  worker metrics before SIGTERM: %s\n", strings.Join(parts, " "))
		}
		for _, p := range r.problems {
			fmt.Fprintf(w, "  worker log: %s\n", p)
		}
	}
}

// prefixWriter writes whole lines, each with a prefix (-v).
type prefixWriter struct {
	mu     sync.Mutex
	prefix string
	w      io.Writer
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		if _, err := fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i]); err != nil {
			return 0, err
		}
		p.buf = p.buf[i+1:]
	}
}
