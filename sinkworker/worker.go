package sinkworker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// Options are the parts of a Worker that are not configuration: what the
// embedding program or a test provides.
type Options struct {
	// Logger receives structured logs; default JSON on stderr.
	Logger *slog.Logger
	// Registry receives the worker's metrics and is served on /metrics;
	// default a new registry, with the Go runtime and process collectors.
	Registry *prometheus.Registry
	// Backoff is the NAK delay policy after a failed upload; default
	// DefaultBackoff.
	Backoff Backoff
}

// Worker is one sink worker process: it moves events from the configured
// consumer to S3 until its context is cancelled, then drains.
type Worker struct {
	cfg      config.Config
	log      *slog.Logger
	reg      *prometheus.Registry
	metrics  *metrics
	batcher  *batcher
	encoder  *encoder
	backoff  Backoff
	listener net.Listener

	ready    atomic.Bool
	nc       atomic.Pointer[nats.Conn]
	stopping atomic.Bool
	// shutdownNacked counts events handed back because the drain ran out
	// of time or S3 failed during it; the exit log reports it.
	shutdownNacked atomic.Int64
	bufs           sync.Pool
	// encoding holds a token per encode in progress: Workers at most.
	encoding chan struct{}
}

// New validates cfg and prepares a worker. It already listens on
// cfg.MetricsAddr (see MetricsAddr), so a port conflict fails here.
func New(cfg config.Config, opts Options) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, log: opts.Logger, reg: opts.Registry, backoff: opts.Backoff}
	if w.log == nil {
		w.log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	ownRegistry := w.reg == nil
	if ownRegistry {
		w.reg = prometheus.NewRegistry()
	}
	if w.backoff == (Backoff{}) {
		w.backoff = DefaultBackoff
	}
	w.metrics = newMetrics(w.reg, func() *batcher { return w.batcher }, cfg.MaxBufferedBytes, ownRegistry)
	w.batcher = newBatcher(cfg, w.metrics)
	enc, err := newEncoder(cfg.Compression, cfg.Workers)
	if err != nil {
		return nil, fmt.Errorf("%sCOMPRESSION: %w", config.EnvPrefix, err)
	}
	w.encoder = enc
	w.encoding = make(chan struct{}, cfg.Workers)
	w.bufs.New = func() any { return new(bytes.Buffer) }
	l, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("%sMETRICS_ADDR: %w", config.EnvPrefix, err)
	}
	w.listener = l
	return w, nil
}

// MetricsAddr is the address /metrics, /healthz and /readyz are served on.
func (w *Worker) MetricsAddr() string { return w.listener.Addr().String() }

// Run connects, binds to the consumer and moves events until ctx is
// cancelled (SIGTERM), then drains within ShutdownTimeout: stop fetching,
// write and ACK every open batch, NAK what could not be written in time.
// It returns an error only when the worker could not start.
func (w *Worker) Run(ctx context.Context) error {
	srv := &http.Server{Handler: w.handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(w.listener) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	defer limitMemory(w.cfg.MaxBufferedBytes)()

	up, err := newUploader(ctx, w.cfg, w.metrics)
	if err != nil {
		return err
	}
	opts, err := natsOptions(w.cfg, w.log)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(w.cfg.NATSURL, opts...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", w.cfg.NATSURL, err)
	}
	defer nc.Close()
	w.nc.Store(nc)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	cons, err := w.bind(ctx, js)
	if err != nil {
		if ctx.Err() != nil {
			w.log.Info("Stopped before binding to the consumer")
			return nil
		}
		return err
	}

	// workCtx outlives ctx: uploads, ACKs and dead-letter publishes go on
	// during the drain, and are cut off only at its deadline.
	workCtx, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()
	// settleCtx bounds ACKs and NAKs: it ends a little after workCtx, so
	// the outcome of an upload cut off at the deadline is still reported.
	settleCtx, cancelSettle := context.WithCancel(context.Background())
	defer cancelSettle()
	dead := &deadLetterer{nc: nc, js: js, subject: w.cfg.DeadLetterSubject, stream: w.cfg.Stream,
		backoff: w.backoff, metrics: w.metrics, log: w.log}
	dead.detect(ctx)
	nFlushers := w.cfg.Workers * flushersPerWorker
	ack := &acker{nc: nc, backoff: w.backoff, maxDeliver: w.cfg.MaxDeliver, dead: dead, metrics: w.metrics, log: w.log,
		written: make(chan *batch, nFlushers), release: w.batcher.release}

	// Flushers mostly wait on S3: there are flushersPerWorker of them per
	// worker, so that many small files (many partitions) are uploaded side
	// by side, while encoding, which is CPU, runs Workers at a time. The
	// acker settles what they wrote; flushers counts it too, so waiting
	// for flushers waits until every written batch is ACKed.
	var flushers, flushLoops sync.WaitGroup
	for range nFlushers {
		flushLoops.Go(func() { w.flushLoop(workCtx, settleCtx, up, ack) })
	}
	flushers.Go(func() { ack.run(settleCtx) })
	flushers.Go(func() {
		flushLoops.Wait()
		close(ack.written)
	})
	stopTick := make(chan struct{})
	var ticker sync.WaitGroup
	ticker.Go(func() { w.tickLoop(stopTick) })
	ticker.Go(func() { w.watchConsumer(stopTick, cons) })

	var fetchers sync.WaitGroup
	var iters []jetstream.MessagesContext
	for range w.cfg.Workers {
		it, err := cons.Messages(jetstream.PullMaxMessages(w.cfg.FetchBatchSize), jetstream.PullExpiry(pullExpiry))
		if err != nil {
			for _, it := range iters {
				it.Stop()
			}
			cancelWork()
			w.batcher.abort()
			close(stopTick)
			return fmt.Errorf("pull from consumer %s: %w", w.cfg.Consumer, err)
		}
		iters = append(iters, it)
		f := &fetcher{it: it, batcher: w.batcher, dead: dead, metrics: w.metrics, w: w}
		fetchers.Go(func() { f.run(workCtx) })
	}
	w.ready.Store(true)
	w.log.Info("Started", "stream", w.cfg.Stream, "consumer", w.cfg.Consumer, "workers", w.cfg.Workers,
		"bucket", w.cfg.Bucket, "prefix", w.cfg.Prefix, "metrics", w.MetricsAddr())

	<-ctx.Done()
	w.drain(iters, &fetchers, &flushers, cancelWork, cancelSettle, ack)
	close(stopTick)
	ticker.Wait()
	if err := nc.FlushTimeout(w.margin() / 2); err != nil {
		w.log.Warn("Could not flush the NATS connection on exit", "error", err)
	}
	return nil
}

// drain is the shutdown sequence. Everything runs against one deadline,
// ShutdownTimeout minus a margin kept for the NAKs, so the process exits
// before the kubelet's SIGKILL.
func (w *Worker) drain(iters []jetstream.MessagesContext, fetchers, flushers *sync.WaitGroup, cancelWork, cancelSettle context.CancelFunc, ack *acker) {
	start := time.Now()
	w.stopping.Store(true)
	w.ready.Store(false)
	deadline := time.NewTimer(w.cfg.ShutdownTimeout - w.margin())
	defer deadline.Stop()
	w.log.Info("Stopping: no more fetching, writing open batches", "timeout", w.cfg.ShutdownTimeout)

	// Drain (not Stop) so messages already delivered to this process are
	// batched and written instead of waiting out AckWait.
	for _, it := range iters {
		it.Drain()
	}
	timedOut := !waitOrDeadline(fetchers, deadline.C)
	if !timedOut {
		w.batcher.close()
		timedOut = !waitOrDeadline(flushers, deadline.C)
	}
	if timedOut {
		left := w.batcher.abort()
		cancelWork() // in-flight uploads fail now, and their flushers NAK them
		// The NAKs get half of the margin, so the process still exits
		// before the kubelet's SIGKILL if NATS is unreachable.
		settle := time.AfterFunc(w.margin()/2, cancelSettle)
		defer settle.Stop()
		nakCtx, cancel := context.WithTimeout(context.Background(), w.margin()/2)
		defer cancel()
		n := 0
		for _, bt := range left {
			ack.nak(nakCtx, bt.msgs, true, errors.New("not written before the shutdown deadline"))
			w.batcher.release(bt)
			n += len(bt.msgs)
		}
		w.shutdownNacked.Add(int64(n))
		fetchers.Wait()
		flushers.Wait()
	}
	_, buffered, _ := w.batcher.stats()
	w.log.Info("Stopped", "duration", time.Since(start).Round(time.Millisecond), "timed_out", timedOut,
		"nacked", w.shutdownNacked.Load(), "buffered_bytes", buffered)
}

// margin is the part of ShutdownTimeout kept for NAKing what could not be
// written and closing the connection.
func (w *Worker) margin() time.Duration {
	return min(w.cfg.ShutdownTimeout/5, 3*time.Second)
}

func waitOrDeadline(wg *sync.WaitGroup, deadline <-chan time.Time) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-deadline:
		return false
	}
}

// bind returns the durable consumer, creating it from ConsumerConfig when
// it does not exist (a worker run outside Kubernetes). An existing consumer
// is never updated: the operator owns it. Until the stream exists it waits.
func (w *Worker) bind(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	for {
		c, err := js.Consumer(ctx, w.cfg.Stream, w.cfg.Consumer)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			c, err = js.CreateConsumer(ctx, w.cfg.Stream, w.cfg.ConsumerConfig())
			if err == nil {
				w.log.Info("Created the durable consumer", "stream", w.cfg.Stream, "consumer", w.cfg.Consumer)
			}
		}
		if err == nil {
			w.checkConsumer(c.CachedInfo())
			return c, nil
		}
		w.log.Warn("Cannot bind to the consumer yet; retrying", "stream", w.cfg.Stream, "consumer", w.cfg.Consumer, "error", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// checkConsumer warns about consumer settings that make batches stall.
func (w *Worker) checkConsumer(info *jetstream.ConsumerInfo) {
	if info == nil {
		return
	}
	if mp := info.Config.MaxAckPending; mp > 0 && mp < w.cfg.BatchMaxEvents {
		w.log.Warn("The consumer's MaxAckPending is below BatchMaxEvents: files will be small, cut whenever it is reached",
			"max_ack_pending", mp, "batch_max_events", w.cfg.BatchMaxEvents)
	}
	if info.Config.AckWait > 0 && info.Config.AckWait != w.cfg.AckWait {
		// The server's value is the one that redelivers: lease by it.
		w.log.Warn("The consumer's AckWait differs from the configured one; leases follow the consumer's",
			"consumer_ack_wait", info.Config.AckWait, "ack_wait", w.cfg.AckWait)
		w.batcher.leaseAfter = info.Config.AckWait / 2
	}
}

// tickLoop drives age-based and idle cuts, and leases. A quarter of
// idleFor keeps an idle batch from waiting much past it: a time-ordered
// backlog then holds a fraction of a second of events beyond the hour
// being read.
func (w *Worker) tickLoop(stop <-chan struct{}) {
	every := min(w.cfg.BatchMaxAge/4, w.batcher.leaseAfter/4, idleFor/4)
	every = max(every, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			w.batcher.tick(now)
		}
	}
}

// The consumer's counters are read every consumerInfoEvery, and once more
// whenever the worker has received nothing for caughtUpQuiet, to tell the
// end of a backlog quickly without asking the server more often.
const (
	consumerInfoEvery = time.Second
	caughtUpQuiet     = 200 * time.Millisecond
)

// watchConsumer reads the consumer's counters and cuts open batches that
// nothing more will fill:
//   - every open batch, when the consumer has as many unacknowledged
//     messages as its MaxAckPending allows: JetStream then delivers nothing
//     more to any worker until something is ACKed, and the open batches
//     would otherwise wait for BatchMaxAge. Every worker sees the same
//     count and cuts its own batches.
//   - the batches of past hours, when the consumer has nothing pending and
//     this worker received nothing for caughtUpQuiet: the end of a backlog.
func (w *Worker) watchConsumer(stop <-chan struct{}, cons jetstream.Consumer) {
	t := time.NewTicker(caughtUpQuiet / 2)
	defer t.Stop()
	var lastInfo, checkedQuiet time.Time
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := time.Now()
		lastAdd := w.batcher.lastAdded()
		quiet := now.Sub(lastAdd) >= caughtUpQuiet && !lastAdd.Equal(checkedQuiet)
		if !quiet && now.Sub(lastInfo) < consumerInfoEvery {
			continue
		}
		if quiet {
			checkedQuiet = lastAdd // once per quiet spell
		}
		lastInfo = now
		ctx, cancel := context.WithTimeout(context.Background(), consumerInfoEvery)
		info, err := cons.Info(ctx)
		cancel()
		if err != nil {
			continue // NATS away: nothing is delivered anyway
		}
		if limit := info.Config.MaxAckPending; limit > 0 && info.NumAckPending >= limit {
			if n := w.batcher.cutAll(flushAckPending); n > 0 {
				w.log.Info("Consumer reached MaxAckPending; writing open batches early", "max_ack_pending", limit, "batches", n)
			}
			continue
		}
		if info.NumPending == 0 {
			if n := w.batcher.cutPast(time.Now(), caughtUpQuiet); n > 0 {
				w.log.Debug("Consumer caught up; writing the batches of past hours", "batches", n)
			}
		}
	}
}

// pullExpiry is how long each pull request lives. nats.go notices a pull
// that went silent (its heartbeats stopped) after twice the heartbeat,
// half the expiry: with its default 30 s, a hack/bench drain once sat idle
// for 30 s before the fetcher re-pulled. Re-pulling every 5 s when idle
// costs the server next to nothing.
const pullExpiry = 5 * time.Second

// flushersPerWorker is how many flushers (uploads in flight) there are per
// Config.Workers. With one, a backlog spread over many partitions (many
// small files) was bound by S3 latency: the hack/bench drain of 300k events
// over 1,200 partitions kept the worker 0.35 cores busy at 0.17x the
// consume ceiling.
const flushersPerWorker = 4

// flushLoop is one flusher: it takes cut batches and writes them, until
// the batcher has no more. A written batch goes to the acker; a failed one
// is NAKed here.
func (w *Worker) flushLoop(ctx, settleCtx context.Context, up *uploader, ack *acker) {
	for {
		bt, ok := w.batcher.next()
		if !ok {
			return
		}
		if w.flush(ctx, settleCtx, bt, up, ack) {
			ack.written <- bt
		} else {
			w.batcher.release(bt)
		}
	}
}

// flush encodes and uploads bt and reports whether it is written; when it
// is not, its events are NAKed.
func (w *Worker) flush(ctx, settleCtx context.Context, bt *batch, up *uploader, ack *acker) bool {
	start := time.Now()
	sort.Sort(bySeq{bt})
	rows := dedupe(bt)
	buf := w.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 2*int(w.cfg.BatchMaxBytes) {
			w.bufs.Put(buf)
		}
	}()
	first, last := bt.msgs[0].seq, bt.msgs[len(bt.msgs)-1].seq
	key := objectKey(w.cfg.Prefix, w.cfg.Stream, w.cfg.Consumer, bt.key, w.cfg.TimeGranularity, first, last)
	w.encoding <- struct{}{}
	err := w.encoder.encode(buf, rows)
	<-w.encoding
	if err == nil {
		key, err = up.put(ctx, key, buf.Bytes(), batchID(bt.msgs))
	}
	if err != nil {
		w.metrics.flushSeconds.WithLabelValues("error").Observe(time.Since(start).Seconds())
		immediate := w.stopping.Load()
		w.log.Warn("Could not write a batch; its events are NAKed for redelivery", "key", key,
			"events", len(bt.msgs), "reason", bt.reason, "immediate", immediate, "error", err)
		ack.nak(settleCtx, bt.msgs, immediate, err)
		if immediate {
			w.shutdownNacked.Add(int64(len(bt.msgs)))
		}
		return false
	}
	w.metrics.flushSeconds.WithLabelValues("ok").Observe(time.Since(start).Seconds())
	w.metrics.files.Inc()
	w.metrics.fileBytes.Add(float64(buf.Len()))
	w.metrics.fileSize.Observe(float64(buf.Len()))
	w.metrics.fileRows.Add(float64(len(rows)))
	w.log.Debug("Wrote batch", "key", key, "rows", len(rows), "bytes", buf.Len(), "reason", bt.reason,
		"duration", time.Since(start))
	return true
}

// bySeq sorts a batch's rows and messages together by stream sequence, so
// the same events always encode to the same file.
type bySeq struct{ b *batch }

func (s bySeq) Len() int           { return len(s.b.msgs) }
func (s bySeq) Less(i, j int) bool { return s.b.msgs[i].seq < s.b.msgs[j].seq }
func (s bySeq) Swap(i, j int) {
	s.b.msgs[i], s.b.msgs[j] = s.b.msgs[j], s.b.msgs[i]
	s.b.rows[i], s.b.rows[j] = s.b.rows[j], s.b.rows[i]
}

// dedupe drops repeated rows of one stream sequence from a sorted batch: an
// event redelivered while its first copy still waited (a lost lease) is
// written once, and both deliveries are ACKed.
func dedupe(bt *batch) []Row {
	dup := false
	for i := 1; i < len(bt.msgs); i++ {
		if bt.msgs[i].seq == bt.msgs[i-1].seq {
			dup = true
			break
		}
	}
	if !dup {
		return bt.rows
	}
	rows := make([]Row, 0, len(bt.rows))
	for i := range bt.rows {
		if i == 0 || bt.msgs[i].seq != bt.msgs[i-1].seq {
			rows = append(rows, bt.rows[i])
		}
	}
	return rows
}

// handler serves metrics and probes. Ready means connected to NATS and
// bound to the consumer, and not draining.
func (w *Worker) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(w.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = rw.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
		if nc := w.nc.Load(); !w.ready.Load() || nc == nil || !nc.IsConnected() {
			http.Error(rw, "not ready: not connected to NATS or not bound to the consumer", http.StatusServiceUnavailable)
			return
		}
		_, _ = rw.Write([]byte("ok\n"))
	})
	return mux
}
