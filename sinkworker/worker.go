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
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"
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
	// Backoff is the wait between attempts to upload a batch, and the NAK
	// delay of an event that could not be dead-lettered; default
	// DefaultBackoff.
	Backoff Backoff
}

// Worker is one sink worker process: it moves events from the configured
// consumer to S3 until its context is cancelled, then drains.
type Worker struct {
	cfg     config.Config
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics
	batcher *batcher
	encoder *encoder
	// plan is the declared schema's, nil for the envelope.
	plan *schemaPlan
	// keyPrefix starts every object key: Config.Prefix, or the table's
	// data directory with Config.Table.
	keyPrefix string
	// table commits written files before they are ACKed (Config.Table).
	table    *tableSink
	backoff  Backoff
	listener net.Listener

	ready    atomic.Bool
	nc       atomic.Pointer[nats.Conn]
	stopping atomic.Bool
	// failingSince is when the current run of failed uploads began (Unix
	// nanoseconds; 0 when the last upload succeeded): readiness reports a
	// sink that cannot write.
	failingSince atomic.Int64
	fetchersLive atomic.Int64
	// incarnation names the bound stream's incarnation in object keys.
	incarnation string
	// lost receives why the worker can no longer consume (its consumer or
	// stream is gone); Run then drains and returns it.
	lost chan error
	// shutdownNacked counts events handed back because the drain ran out
	// of time or S3 failed during it; the exit log reports it.
	shutdownNacked atomic.Int64
	// flushing counts the batches flushers have taken and not yet handed
	// on: with the batcher empty and none flushing, no file is on its way.
	flushing atomic.Int64
	bufs     sync.Pool
	// encoding holds a token per encode in progress: Workers at most.
	encoding chan struct{}
}

// New validates cfg and prepares a worker. It already listens on
// cfg.MetricsAddr (see MetricsAddr), so a port conflict fails here.
func New(cfg config.Config, opts Options) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, log: opts.Logger, reg: opts.Registry, backoff: opts.Backoff, keyPrefix: cfg.Prefix}
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
	if cfg.Schema != nil {
		w.plan = compileSchema(cfg.Schema)
	}
	w.batcher = newBatcher(cfg, w.plan, w.metrics)
	enc, err := newEncoder(cfg.Compression, cfg.Workers, w.plan)
	if err != nil {
		return nil, fmt.Errorf("%sCOMPRESSION: %w", config.EnvPrefix, err)
	}
	w.encoder = enc
	w.encoding = make(chan struct{}, cfg.Workers)
	w.lost = make(chan error, 1)
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
// It returns an error when the worker could not start, and when its
// consumer or stream was deleted under it (after the same drain): the
// process then exits non-zero, Kubernetes restarts it, and it binds again
// once the consumer is back, instead of staying up consuming nothing.
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
	opts, err := natsOptions(w.cfg, w.log, func() {
		w.metrics.reconnects.Inc()
		w.batcher.renewAllLeases()
	})
	if err != nil {
		return err
	}
	nc, err := nats.Connect(w.cfg.NATSURL, opts...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", w.cfg.NATSURL, err)
	}
	defer nc.Close()
	w.nc.Store(nc)
	w.batcher.connected = nc.IsConnected
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

	if w.cfg.Table != nil {
		if w.table, err = w.openTableRetrying(ctx, cons, up); err != nil || w.table == nil {
			return err // nil: stopped while waiting
		}
	}

	// workCtx outlives ctx: uploads, ACKs and dead-letter publishes go on
	// during the drain, and are cut off only at its deadline.
	workCtx, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()
	// settleCtx bounds ACKs and NAKs: it ends a little after workCtx, so
	// the outcome of an upload cut off at the deadline is still reported.
	settleCtx, cancelSettle := context.WithCancel(context.Background())
	defer cancelSettle()
	dead := &deadLetterer{js: js, subject: w.cfg.DeadLetterSubject, stream: w.cfg.Stream, incarnation: w.incarnation,
		backoff: w.backoff, metrics: w.metrics, log: w.log}
	dead.detect(ctx)
	nFlushers := w.cfg.Workers * flushersPerWorker
	ack := &acker{nc: nc, backoff: w.backoff, maxDeliver: w.cfg.MaxDeliver, dead: dead, metrics: w.metrics, log: w.log,
		written: make(chan *batch, nFlushers), release: w.batcher.release}
	if info := cons.CachedInfo(); info != nil {
		ack.consumerMaxDeliver = info.Config.MaxDeliver
	}

	// Flushers mostly wait on S3: there are flushersPerWorker of them per
	// worker, so that many small files (many partitions) are uploaded side
	// by side, while encoding, which is CPU, runs Workers at a time. The
	// acker settles what they wrote; flushers counts it too, so waiting
	// for flushers waits until every written batch is ACKed.
	var flushers, flushLoops, committing sync.WaitGroup
	for range nFlushers {
		flushLoops.Go(func() { w.flushLoop(workCtx, settleCtx, up, ack) })
	}
	if w.table != nil {
		committing.Go(func() { w.table.run(workCtx, settleCtx, up, ack) })
	}
	flushers.Go(func() { ack.run(settleCtx) })
	flushers.Go(func() {
		flushLoops.Wait()
		if w.table != nil {
			close(w.table.in)
			committing.Wait()
		}
		close(ack.written)
	})
	stopTick := make(chan struct{})
	var ticker sync.WaitGroup
	ticker.Go(func() { w.tickLoop(stopTick) })
	ticker.Go(func() { w.watchConsumer(stopTick, cons) })

	var fetchers sync.WaitGroup
	var fs []*fetcher
	pull := []jetstream.PullMessagesOpt{jetstream.PullMaxMessages(w.cfg.FetchBatchSize), jetstream.PullExpiry(pullExpiry)}
	for range w.cfg.Workers {
		f := &fetcher{cons: cons, pull: pull, pauseAfter: w.batcher.leaseAfter / 2, dec: newDecoder(w.cfg, w.plan),
			batcher: w.batcher, dead: dead, metrics: w.metrics, w: w}
		fs = append(fs, f)
		fetchers.Go(func() { f.run(workCtx) })
	}
	w.ready.Store(true)
	w.log.Info("Started", "stream", w.cfg.Stream, "incarnation", w.incarnation, "consumer", w.cfg.Consumer,
		"workers", w.cfg.Workers, "bucket", w.cfg.Bucket, "prefix", w.cfg.Prefix, "schema", schemaSummary(w.cfg.Schema),
		"metrics", w.MetricsAddr(), "memory_limit_mib", debug.SetMemoryLimit(-1)>>20)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-w.lost:
		w.log.Error("Lost the consumer: writing what is held, then exiting so that the worker restarts and binds again",
			"stream", w.cfg.Stream, "consumer", w.cfg.Consumer, "error", runErr)
	}
	w.drain(fs, &fetchers, &flushers, cancelWork, cancelSettle, ack)
	close(stopTick)
	ticker.Wait()
	if err := nc.FlushTimeout(w.margin() / 2); err != nil {
		w.log.Warn("Could not flush the NATS connection on exit", "error", err)
	}
	return runErr
}

// lose reports that the worker can no longer consume; the first report wins.
func (w *Worker) lose(err error) {
	select {
	case w.lost <- err:
	default:
	}
}

// drain is the shutdown sequence. Everything runs against one deadline,
// ShutdownTimeout minus a margin kept for the NAKs, so the process exits
// before the kubelet's SIGKILL.
func (w *Worker) drain(fs []*fetcher, fetchers, flushers *sync.WaitGroup, cancelWork, cancelSettle context.CancelFunc, ack *acker) {
	start := time.Now()
	w.stopping.Store(true)
	w.ready.Store(false)
	deadline := time.NewTimer(w.cfg.ShutdownTimeout - w.margin())
	defer deadline.Stop()
	w.log.Info("Stopping: no more fetching, writing open batches", "timeout", w.cfg.ShutdownTimeout)

	// Drain (not Stop) so messages already delivered to this process are
	// batched and written instead of waiting out AckWait.
	for _, f := range fs {
		f.drain()
	}
	w.batcher.stopFetching()
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

// bind returns the durable consumer and names the stream's incarnation.
// A missing consumer is created from ConsumerConfig only when
// CreateConsumer allows it (a worker run on its own); under the operator
// the worker waits for it, unready, rather than start a DeliverAll replay
// of a consumer removed on purpose. An existing consumer is never updated:
// whoever made it owns it. Until the stream exists it waits too.
func (w *Worker) bind(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	for {
		c, err := js.Consumer(ctx, w.cfg.Stream, w.cfg.Consumer)
		if errors.Is(err, jetstream.ErrConsumerNotFound) && w.cfg.CreateConsumer {
			c, err = js.CreateConsumer(ctx, w.cfg.Stream, w.cfg.ConsumerConfig())
			if err == nil {
				w.log.Info("Created the durable consumer", "stream", w.cfg.Stream, "consumer", w.cfg.Consumer)
			}
		}
		var st jetstream.Stream
		if err == nil {
			st, err = js.Stream(ctx, w.cfg.Stream)
		}
		if err == nil {
			w.incarnation = streamIncarnation(w.cfg.Stream, st.CachedInfo().Created)
			w.checkConsumer(c.CachedInfo())
			return c, nil
		}
		w.log.Warn("Cannot bind to the consumer yet; retrying", "stream", w.cfg.Stream, "consumer", w.cfg.Consumer,
			"create", w.cfg.CreateConsumer, "error", err)
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
	if md := info.Config.MaxDeliver; md > 0 {
		w.log.Warn("The consumer's MaxDeliver is limited: JetStream drops an event after that many deliveries, "+
			"whoever spent them; the worker dead-letters an event on its last delivery if it must hand it back",
			"consumer_max_deliver", md)
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
	bound := cons.CachedInfo()
	missing := 0
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
		if gone := consumerGone(err, bound, info); gone != nil {
			// Twice in a row, a second apart: one answer is not a verdict.
			if missing++; missing >= 2 {
				w.lose(gone)
			}
			continue
		}
		missing = 0
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

// consumerGone tells from a consumer-info answer whether the consumer the
// worker bound to is gone: deleted, its stream deleted, or replaced by a
// new consumer of the same name (whose deliveries the old pull requests
// will never see). Any other error is an outage, not a verdict.
func consumerGone(err error, bound, info *jetstream.ConsumerInfo) error {
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		return err
	case err == nil && bound != nil && !info.Created.Equal(bound.Created):
		return fmt.Errorf("consumer %s was re-created at %s", info.Name, info.Created.Format(time.RFC3339))
	}
	return nil
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
		w.flushing.Add(1)
		written := w.flush(ctx, settleCtx, bt, up, ack)
		w.flushing.Add(-1) // before the hand-over: the table sink may look at once
		switch {
		case !written:
			w.batcher.release(bt)
		case w.table != nil:
			w.table.take(bt)
		default:
			ack.written <- bt
		}
	}
}

// flush encodes and uploads bt and reports whether it is written. A
// failed upload is not the events' fault: the batch stays held (and
// leased, see batcher.tick) and is retried with backoff for as long as it
// takes, without spending a delivery, until it is written or the shutdown
// deadline cuts the drain short; then its events are NAKed for redelivery
// elsewhere. Only a batch that cannot be encoded is NAKed at once.
func (w *Worker) flush(ctx, settleCtx context.Context, bt *batch, up *uploader, ack *acker) bool {
	start := time.Now()
	if bt.rows == nil {
		// Written, dropped while it waited for its table commit, and now
		// written again (see tableSink.take).
		if err := w.redecode(bt); err != nil {
			w.log.Error("Could not decode a written batch again; its events are NAKed", "events", len(bt.msgs), "error", err)
			ack.nak(settleCtx, bt.msgs, w.stopping.Load(), err)
			return false
		}
	}
	sort.Sort(bySeq{bt})
	rows, vals := dedupe(bt)
	buf := w.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 2*int(w.cfg.BatchMaxBytes) {
			w.bufs.Put(buf)
		}
	}()
	first, last := bt.msgs[0].seq, bt.msgs[len(bt.msgs)-1].seq
	key := objectKey(w.keyPrefix, w.incarnation, w.cfg.Consumer, w.partitionPath(bt.key), bt.key.bucket, w.cfg.TimeGranularity, first, last)
	w.encoding <- struct{}{}
	var err error
	if w.plan != nil {
		err = w.encoder.encodeValues(buf, vals)
	} else {
		err = w.encoder.encode(buf, rows)
	}
	<-w.encoding
	if err != nil {
		w.metrics.flushSeconds.WithLabelValues("error").Observe(time.Since(start).Seconds())
		w.log.Error("Could not encode a batch; its events are NAKed", "key", key, "events", len(bt.msgs), "error", err)
		ack.nak(settleCtx, bt.msgs, w.stopping.Load(), err)
		return false
	}
	if key, err = w.upload(ctx, up, key, buf.Bytes(), bt); err == nil {
		bt.fileKey, bt.fileSize, bt.fileRows = key, int64(buf.Len()), len(rows)
	} else {
		w.metrics.flushSeconds.WithLabelValues("error").Observe(time.Since(start).Seconds())
		w.log.Warn("Could not write a batch before the shutdown deadline; its events are NAKed for redelivery",
			"key", key, "events", len(bt.msgs), "reason", bt.reason, "error", err)
		ack.nak(settleCtx, bt.msgs, true, err)
		w.shutdownNacked.Add(int64(len(bt.msgs)))
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

// upload puts body at key, attempt after attempt, each bounded by
// attemptTimeout, until it is written or ctx (the drain's deadline) ends.
// It returns where the file is.
func (w *Worker) upload(ctx context.Context, up *uploader, key string, body []byte, bt *batch) (string, error) {
	sum := contentHash(body)
	var firstErr time.Time
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout(len(body)))
		at, err := up.put(actx, key, body, sum)
		timedOut := errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
		cancel()
		if err == nil {
			w.metrics.uploads.WithLabelValues(uploadOK).Inc()
			w.metrics.lastUpload.SetToCurrentTime()
			w.failingSince.Store(0)
			if attempt > 1 {
				w.log.Info("Wrote a batch after failed attempts", "key", at, "attempts", attempt,
					"failing_for", time.Since(firstErr).Round(time.Millisecond))
			}
			return at, nil
		}
		if timedOut {
			w.metrics.uploads.WithLabelValues(uploadTimeout).Inc()
		} else {
			w.metrics.uploads.WithLabelValues(uploadError).Inc()
		}
		if ctx.Err() != nil {
			return at, err
		}
		now := time.Now()
		if attempt == 1 {
			firstErr = now
		}
		w.failingSince.CompareAndSwap(0, now.UnixNano())
		delay := w.backoff.Delay(uint64(attempt))
		// Logged on the first failure, then about once a minute per batch.
		if attempt == 1 || attempt%max(1, int(time.Minute/max(delay, time.Millisecond))) == 0 {
			w.log.Warn("Could not write a batch; retrying, its events stay held and leased", "key", at,
				"events", len(bt.msgs), "attempt", attempt, "retry_in", delay, "error", err)
		}
		select {
		case <-ctx.Done():
			return at, err
		case <-time.After(delay):
		}
		w.metrics.uploadRetries.Inc()
	}
}

// partitionPath is the Hive path of a partition before date=: app_id=…
// for the envelope, the declared partition columns' (possibly none) else.
func (w *Worker) partitionPath(key partitionKey) string {
	if w.plan == nil {
		return "app_id=" + key.app
	}
	return key.app
}

// redecode decodes a batch's events again into its rows and value blocks
// (see tableSink.take). The event window only widens with time (its far
// end is now + maxAhead): an event decoded once decodes again.
func (w *Worker) redecode(bt *batch) error {
	dec := newDecoder(w.cfg, w.plan)
	bt.rows = make([]Row, len(bt.msgs))
	bt.vals = make([]parquet.Value, 0, len(bt.msgs)*bt.width)
	for i, m := range bt.msgs {
		meta, err := m.msg.Metadata()
		if err != nil {
			return err
		}
		if err := dec.decodeDelivery(m.msg.Data(), m.msg.Subject(), m.seq, meta.Timestamp, &bt.rows[i]); err != nil {
			return err
		}
		bt.rows[i].AppID = bt.key.app
		bt.vals = append(bt.vals, dec.values()...)
	}
	return nil
}

// bySeq sorts a batch's rows, messages and value blocks together by stream
// sequence, so the same events always encode to the same file.
type bySeq struct{ b *batch }

func (s bySeq) Len() int           { return len(s.b.msgs) }
func (s bySeq) Less(i, j int) bool { return s.b.msgs[i].seq < s.b.msgs[j].seq }
func (s bySeq) Swap(i, j int) {
	s.b.msgs[i], s.b.msgs[j] = s.b.msgs[j], s.b.msgs[i]
	s.b.rows[i], s.b.rows[j] = s.b.rows[j], s.b.rows[i]
	if w := s.b.width; w > 0 {
		a, b := s.b.vals[i*w:(i+1)*w], s.b.vals[j*w:(j+1)*w]
		for k := range a {
			a[k], b[k] = b[k], a[k]
		}
	}
}

// dedupe drops repeated events of one stream sequence from a sorted batch:
// an event redelivered while its first copy still waited (a lost lease) is
// written once, and both deliveries are ACKed. It returns the rows and,
// with a declared schema, the value blocks to write.
func dedupe(bt *batch) ([]Row, []parquet.Value) {
	dup := false
	for i := 1; i < len(bt.msgs); i++ {
		if bt.msgs[i].seq == bt.msgs[i-1].seq {
			dup = true
			break
		}
	}
	if !dup {
		return bt.rows, bt.vals
	}
	rows := make([]Row, 0, len(bt.rows))
	var vals []parquet.Value
	if bt.width > 0 {
		vals = make([]parquet.Value, 0, len(bt.vals))
	}
	for i := range bt.rows {
		if i == 0 || bt.msgs[i].seq != bt.msgs[i-1].seq {
			rows = append(rows, bt.rows[i])
			if bt.width > 0 {
				vals = append(vals, bt.vals[i*bt.width:(i+1)*bt.width]...)
			}
		}
	}
	return rows, vals
}

// unwritableAfter is how long uploads may fail in a row before the worker
// reports itself not ready: events are then not moving, whatever else is
// fine, and a sink whose pods are all unready says so in kubectl.
const unwritableAfter = 30 * time.Second

// handler serves metrics and probes. Ready means events can move: bound to
// the consumer and connected to NATS, every fetcher pulling, uploads not
// failing for unwritableAfter, and not draining.
func (w *Worker) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(w.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = rw.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
		if why := w.notReady(); why != "" {
			http.Error(rw, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		_, _ = rw.Write([]byte("ok\n"))
	})
	return mux
}

// notReady says why events cannot move, or "" when they can.
func (w *Worker) notReady() string {
	nc := w.nc.Load()
	switch {
	case w.stopping.Load():
		return "draining"
	case !w.ready.Load() || nc == nil:
		return "not bound to the consumer"
	case !nc.IsConnected():
		return "not connected to NATS"
	case w.fetchersLive.Load() < int64(w.cfg.Workers):
		return fmt.Sprintf("%d of %d fetchers pulling", w.fetchersLive.Load(), w.cfg.Workers)
	}
	if since := w.failingSince.Load(); since != 0 && time.Since(time.Unix(0, since)) >= unwritableAfter {
		return "uploads to S3 failing since " + time.Unix(0, since).UTC().Format(time.RFC3339)
	}
	return ""
}
