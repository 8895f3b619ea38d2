package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// worker runs bin/sinkworker as Kubernetes runs the Deployment's container:
// one process, restarted whenever it exits on its own (after restartDelay),
// until the case stops it with SIGTERM. It records why each process
// ended and samples each one's peak RSS (VmHWM) while it runs.
type worker struct {
	name    string
	bin     string
	env     []string
	metrics string // http://addr, the same across restarts
	logPath string
	also    io.Writer // -v: the worker's log lines, also here

	mu       sync.Mutex
	cur      *proc
	starts   int
	killed   int      // SIGKILLs sent by the case
	exits    []string // exits on its own: "code 1 after 12s"
	peakRSS  int64    // bytes, the highest VmHWM of any of its processes
	stopping bool
	stopped  chan struct{}
}

const restartDelay = time.Second

func newWorker(name, bin string, cfg config.Config, extraEnv []string, logs string, also io.Writer) *worker {
	w := &worker{name: name, bin: bin, metrics: "http://" + cfg.MetricsAddr, logPath: filepath.Join(logs, name+".log"),
		also: also, stopped: make(chan struct{})}
	for _, v := range cfg.Environ() {
		w.env = append(w.env, v.Name+"="+v.Value)
	}
	w.env = append(w.env, extraEnv...)
	return w
}

// start runs the first process and supervises it and its successors.
func (w *worker) start() error {
	p, err := w.spawn()
	if err != nil {
		return err
	}
	go w.supervise(p)
	return nil
}

var errStopping = errors.New("stopping")

// spawn starts the next process, unless the case is stopping the worker.
func (w *worker) spawn() (*proc, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopping {
		return nil, errStopping
	}
	p, err := startProc(w.name, w.bin, nil, w.env, w.logPath, w.also)
	if err != nil {
		return nil, err
	}
	w.cur = p
	w.starts++
	return p, nil
}

func (w *worker) supervise(p *proc) {
	defer close(w.stopped)
	for {
		started := time.Now()
		tick := time.NewTicker(200 * time.Millisecond)
	wait:
		for {
			select {
			case <-p.done:
				break wait
			case <-tick.C:
				w.sampleRSS(p.pid())
			}
		}
		tick.Stop()
		w.mu.Lock()
		if w.stopping {
			w.mu.Unlock()
			return
		}
		_, killed := killedPIDs.Load(p.pid())
		if !killed {
			w.exits = append(w.exits, fmt.Sprintf("%s after %s", describeExit(p), time.Since(started).Round(time.Second)))
		}
		w.mu.Unlock()
		if !killed {
			time.Sleep(restartDelay)
		}
		for {
			np, err := w.spawn()
			if err == nil {
				p = np
				break
			}
			if errors.Is(err, errStopping) {
				return
			}
			time.Sleep(restartDelay)
		}
	}
}

// killedPIDs are the processes the case SIGKILLed on purpose.
var killedPIDs sync.Map

func describeExit(p *proc) string {
	if code := p.exitCode(); code >= 0 {
		return "exit code " + strconv.Itoa(code)
	}
	return fmt.Sprint(p.err)
}

// kill9 SIGKILLs the running process (as an OOM kill or a node loss
// would); the supervisor starts the next one at once.
func (w *worker) kill9() {
	w.mu.Lock()
	p := w.cur
	w.killed++
	w.mu.Unlock()
	w.sampleRSS(p.pid())
	killedPIDs.Store(p.pid(), true)
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// signal sends sig to the running process: SIGSTOP freezes it as a paused
// VM or a node that stops scheduling would, SIGCONT wakes it.
func (w *worker) signal(sig syscall.Signal) {
	w.mu.Lock()
	p := w.cur
	w.mu.Unlock()
	if p != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// stop ends supervision and SIGTERMs the running process, as a rollout
// does, waiting up to grace for its drain. It returns how long the drain
// took and that process's exit status (nil: exit code 0).
func (w *worker) stop(grace time.Duration) (time.Duration, error) {
	w.mu.Lock()
	w.stopping = true
	p := w.cur
	w.mu.Unlock()
	var err error
	start := time.Now()
	if p != nil && !p.exited() {
		w.sampleRSS(p.pid())
		err = p.stop(syscall.SIGTERM, grace)
	}
	took := time.Since(start)
	if p != nil {
		<-w.stopped
	}
	return took, err
}

// waitReady waits until the running process answers /readyz with 200.
func (w *worker) waitReady(ctx context.Context, timeout time.Duration) bool {
	c := http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if resp, err := c.Get(w.metrics + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// sampleRSS reads VmHWM, the process's peak resident set, from /proc.
func (w *worker) sampleRSS(pid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				w.mu.Lock()
				w.peakRSS = max(w.peakRSS, kb<<10)
				w.mu.Unlock()
			}
		}
	}
}

// scrape reads the unlabelled series, the labelled ones (by their full
// name, name{label="value"}) and the sums of labelled ones from /metrics, for diagnosis only: no verdict is taken from them (except the
// memory case's buffered_bytes_peak, which the case is about).
func (w *worker) scrape() map[string]float64 {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(w.metrics + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "jetsink_") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		if i := strings.IndexByte(name, '{'); i >= 0 {
			out[name] = f // the labelled series itself, too
			name = name[:i]
		}
		out[name] += f
	}
	return out
}

// history says how the worker's processes ended, for the note.
func (w *worker) history() (starts, killed int, exits []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.starts, w.killed, append([]string(nil), w.exits...)
}

func (w *worker) rss() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peakRSS
}

// problems returns the worker's WARN and ERROR log messages, each once
// with how often it was logged and the error of its first occurrence, for
// the diagnosis printed under a failing case.
func (w *worker) problems(limit int) []string {
	f, err := os.Open(w.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	counts := map[string]int{}
	first := map[string]string{}
	var order []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Error string `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil || (rec.Level != "WARN" && rec.Level != "ERROR") {
			continue
		}
		if counts[rec.Msg] == 0 {
			order = append(order, rec.Msg)
			first[rec.Msg] = rec.Error
		}
		counts[rec.Msg]++
	}
	var out []string
	for _, m := range order {
		if len(out) == limit {
			out = append(out, fmt.Sprintf("... and %d more kinds", len(order)-limit))
			break
		}
		line := fmt.Sprintf("%dx %s", counts[m], m)
		if e := first[m]; e != "" {
			if len(e) > 200 {
				e = e[:200] + "..."
			}
			line += " (first: " + e + ")"
		}
		out = append(out, line)
	}
	return out
}
