//go:build iceberg

package sinkworker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/apache/iceberg-go"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	icebergio "github.com/apache/iceberg-go/io"
	_ "github.com/apache/iceberg-go/io/gocloud/s3" // s3:// table locations
	icetable "github.com/apache/iceberg-go/table"
	icebergutils "github.com/apache/iceberg-go/utils"
	"github.com/aws/aws-sdk-go-v2/aws"
	_ "github.com/jackc/pgx/v5/stdlib" // the SQL catalog's PostgreSQL driver
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsink/jetsink/sinkworker/config"
	"github.com/jetsink/jetsink/sinkworker/table"
)

// tableSink is the stage between the flushers and the acker when the sink
// writes an Iceberg table (Config.Table): written files
// wait here, a commit interval or a file count at most, and their events
// are ACKed only once a commit holding them succeeded, or once the table
// shows them committed before (see docs/iceberg-exactly-once.md).
type tableSink struct {
	w         *Worker
	committer *table.Committer
	bucket    string
	// partition gives a batch's file its partition values, by partition
	// field ID.
	partition func(bt *batch) map[int]any
	cons      jetstream.Consumer
	db        *sql.DB     // the catalog's, closed when run returns
	aws       *aws.Config // the uploader's, for iceberg-go (see openTable)
	in        chan *batch
	interval  time.Duration
	maxFiles  int
	// holdFirst is config.FaultHoldFirstCommitEnv: the fault matrix's way
	// to SIGKILL a worker between a commit and its ACKs for certain.
	holdFirst time.Duration
}

// openTableRetrying is openTable until it works: a catalog that cannot be
// reached yet (or two workers creating its tables at once) is waited for,
// not a crash loop. A table the sink cannot write is an error at once. It
// returns nil, nil when ctx ends first.
func (w *Worker) openTableRetrying(ctx context.Context, cons jetstream.Consumer, up *uploader) (*tableSink, error) {
	for attempt := uint64(1); ; attempt++ {
		ts, err := w.openTable(ctx, cons, up)
		if err == nil || errors.Is(err, table.ErrIncompatible) || ctx.Err() != nil {
			return ts, err
		}
		delay := w.backoff.Delay(attempt)
		w.log.Warn("Cannot open the table; retrying", "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(delay):
		}
	}
}

// openTable opens the catalog, creates or evolves the table, and points
// the worker's object keys into the table's location.
func (w *Worker) openTable(ctx context.Context, cons jetstream.Consumer, up *uploader) (*tableSink, error) {
	// iceberg-go reads and writes the table's metadata with the uploader's
	// S3 configuration, given in the context: without it, each table load
	// built a client of its own from the AWS SDK's default chain (a fifth
	// of the commits' CPU in a profile, a new connection each time), and
	// ignored the private CA of destination.tls.
	ctx = icebergutils.WithAwsConfig(ctx, &up.aws)
	tc := w.cfg.Table
	db, err := sql.Open("pgx", tc.URI)
	if err != nil {
		return nil, fmt.Errorf("table catalog: %w", err)
	}
	props := iceberg.Properties{"warehouse": tc.Warehouse, icebergio.S3Region: w.cfg.Region}
	if w.cfg.Endpoint != "" {
		props[icebergio.S3EndpointURL] = w.cfg.Endpoint
		props[icebergio.S3ForceVirtualAddressing] = fmt.Sprint(!w.cfg.ForcePathStyle)
	}
	cat, err := sqlcat.NewCatalog("jetsink", db, sqlcat.Postgres, props)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("table catalog: %w", err)
	}
	ident := icetable.Identifier{tc.Namespace, tc.Name}
	tbl, err := table.Ensure(ctx, cat, ident, w.cfg.Schema, w.cfg.TimeGranularity)
	if err != nil {
		db.Close()
		return nil, err
	}
	loc, ok := strings.CutPrefix(tbl.Location(), "s3://"+w.cfg.Bucket+"/")
	if !ok {
		db.Close()
		return nil, fmt.Errorf("table %s.%s is at %s, outside s3://%s/ (S3_BUCKET), where the worker writes", tc.Namespace, tc.Name, tbl.Location(), w.cfg.Bucket)
	}
	w.keyPrefix = strings.TrimSuffix(loc, "/") + "/data/"
	part, err := w.partitionValues(tbl)
	if err != nil {
		db.Close()
		return nil, err
	}
	hold, _ := time.ParseDuration(os.Getenv(config.FaultHoldFirstCommitEnv))
	return &tableSink{
		w: w, bucket: w.cfg.Bucket, partition: part, cons: cons, db: db, aws: &up.aws, holdFirst: hold,
		committer: &table.Committer{Catalog: cat, Ident: ident, Sink: w.cfg.Consumer, Stream: w.incarnation,
			Attempts: func(outcome string) { w.metrics.commits.WithLabelValues(outcome).Inc() }},
		in:       make(chan *batch, w.cfg.Workers*flushersPerWorker),
		interval: tc.Interval(), maxFiles: tc.MaxFiles(),
	}, nil
}

// partitionValues maps a batch to the table's partition values: identity
// fields from the partition's columns, the time field from its hour or day.
func (w *Worker) partitionValues(tbl *icetable.Table) (func(*batch) map[int]any, error) {
	spec, sc := tbl.Spec(), tbl.Schema()
	type field struct {
		id        int
		col       int    // index in the value block, declared schemas
		transform string // identity, hour, day
	}
	var fields []field
	for _, f := range spec.Fields() {
		name, _ := sc.FindColumnName(f.SourceID())
		fl := field{id: f.FieldID, transform: f.Transform.String(), col: -1}
		switch {
		case fl.transform == "hour" && w.cfg.TimeGranularity == config.GranularityHour,
			fl.transform == "day" && w.cfg.TimeGranularity == config.GranularityDay:
		case fl.transform != "identity":
			return nil, fmt.Errorf("table %s is partitioned by %s(%s), which this sink's %s files do not match",
				strings.Join(tbl.Identifier(), "."), fl.transform, name, w.cfg.TimeGranularity)
		case w.plan == nil && name == "app_id":
		case w.plan != nil:
			fl.col = slices.IndexFunc(w.plan.cols, func(c planColumn) bool { return c.name == name })
			if fl.col < 0 || !slices.Contains(w.plan.parts, fl.col) {
				return nil, fmt.Errorf("table %s is partitioned by %s, which is not one of the sink's partitionBy columns",
					strings.Join(tbl.Identifier(), "."), name)
			}
		default:
			return nil, fmt.Errorf("table %s is partitioned by %s, which the envelope's files are not", strings.Join(tbl.Identifier(), "."), name)
		}
		fields = append(fields, fl)
	}
	return func(bt *batch) map[int]any {
		out := make(map[int]any, len(fields))
		for _, f := range fields {
			switch {
			case f.transform == "hour":
				out[f.id] = int32(bt.key.bucket / 3600)
			case f.transform == "day":
				out[f.id] = int32(bt.key.bucket / 86400)
			case f.col < 0:
				out[f.id] = bt.key.app
			default:
				v := bt.vals[f.col]
				switch w.plan.cols[f.col].typ {
				case config.TypeInt64:
					out[f.id] = v.Int64()
				case config.TypeBoolean:
					out[f.id] = v.Boolean()
				case config.TypeDate:
					out[f.id] = iceberg.Date(v.Int32())
				default:
					out[f.id] = string(v.ByteArray())
				}
			}
		}
		return out
	}, nil
}

// run commits what the flushers wrote until in is closed, then commits
// what is left and returns. One commit is in flight at a time (a worker's
// commits must see each other: see dedupeGroup), and while it is, the
// files that come in wait for the next one rather than stopping the
// flushers: a commit's round trips to the catalog and S3 are not paid by
// the pipeline.
func (t *tableSink) run(ctx, settleCtx context.Context, up *uploader, ack *acker) {
	defer t.db.Close()
	ctx = icebergutils.WithAwsConfig(ctx, t.aws)
	var (
		pending      []*batch
		pendingBytes int64
		due          <-chan time.Time // the commit interval since pending's first file
		ready        bool             // pending waits only for the commit in flight
		inFlight     chan struct{}    // closed when the commit in flight is done
	)
	// Written files keep their events (and the memory budget they count
	// against) until their commit: past an eighth of the budget, waiting
	// for company would soon pause the fetchers (at the whole budget) with
	// nothing to do but wait out the interval. An eighth, not more: a
	// commit costs tens of milliseconds, while the events it waits for
	// cost memory and the garbage collector's time (hack/bench, a million
	// events: 25 snapshots instead of a quarter's 15, for 20 MiB less RSS).
	pressure := t.w.cfg.MaxBufferedBytes / 8
	// Draining, or caught up (no other file on its way): nothing waits for
	// company. A backlog's last files are committed at once, not a commit
	// interval later.
	full := func() bool {
		return len(pending) >= t.maxFiles || pendingBytes >= pressure || t.w.stopping.Load() || t.nothingOnItsWay()
	}
	in := t.in
	for in != nil || inFlight != nil || len(pending) > 0 {
		select {
		case bt, ok := <-in:
			if !ok {
				in, ready = nil, true
				break
			}
			pending = append(pending, bt)
			pendingBytes += bt.bytes + bt.slots
			if len(pending) == 1 {
				due = time.After(t.interval)
			}
			ready = ready || full()
		case <-due:
			due, ready = nil, true
		case <-inFlight:
			inFlight = nil
			ready = ready || (len(pending) > 0 && full())
		}
		if !ready || inFlight != nil || len(pending) == 0 {
			continue
		}
		// At most maxFiles a commit; the rest waits for the next.
		group := pending[:min(len(pending), t.maxFiles)]
		pending = slices.Clone(pending[len(group):])
		pendingBytes, ready, due = 0, in == nil, nil
		for _, bt := range pending {
			pendingBytes += bt.bytes + bt.slots
		}
		if len(pending) > 0 {
			due = time.After(t.interval)
			ready = ready || len(pending) >= t.maxFiles
		}
		done := make(chan struct{})
		inFlight = done
		go func() {
			defer close(done)
			t.commit(ctx, settleCtx, group, up, ack)
		}()
	}
}

// take is how a flusher hands over a written batch to wait for its
// commit. Its rows and value blocks are dropped once its partition values
// are read from them: a written batch waits a commit interval, or until an
// eighth of the buffer is written, and its decoded events (a dozen
// pointers each) were the bulk of what the garbage collector marked, 4×
// the plain sink's mark work in a CPU profile of hack/bench. Its messages
// keep the bodies; flush decodes them again (Worker.redecode) should the
// batch be written again (see commit).
func (t *tableSink) take(bt *batch) {
	bt.partition = t.partition(bt)
	bt.rows, bt.vals = nil, nil
	t.in <- bt
}

// nothingOnItsWay reports whether no other file is coming soon: no batch
// open or cut, none being written, none queued here.
func (t *tableSink) nothingOnItsWay() bool {
	return len(t.in) == 0 && t.w.flushing.Load() == 0 && t.w.batcher.empty()
}

// commit commits the batches' files and hands what is in the table to the
// acker. A file holding events the table has already (a redelivery after
// a lost ACK, a zombie's) is written again without them and committed
// anew; their deliveries are ACKed.
func (t *tableSink) commit(ctx, settleCtx context.Context, batches []*batch, up *uploader, ack *acker) {
	batches, twins := t.dedupeGroup(ctx, settleCtx, batches, up, ack)
	for len(batches) > 0 {
		files := make([]table.File, len(batches))
		byPath := make(map[string]*batch, len(batches))
		for i, bt := range batches {
			files[i] = table.File{Path: "s3://" + t.bucket + "/" + bt.fileKey, Size: bt.fileSize, Rows: int64(bt.fileRows),
				Partition: bt.partition, Seqs: seqsOf(bt)}
			byPath[files[i].Path] = bt
		}
		var floor uint64
		if info, err := t.cons.Info(ctx); err == nil {
			floor = info.AckFloor.Stream
		}
		start := time.Now()
		out, err := t.committer.Commit(ctx, files, floor)
		if err != nil {
			// Only the drain's deadline ends a commit: hand the events back.
			t.w.log.Warn("Could not commit to the table before the shutdown deadline; the events are NAKed", "files", len(batches), "error", err)
			for _, bt := range append(batches, twins...) {
				ack.nak(settleCtx, bt.msgs, true, err)
				t.w.shutdownNacked.Add(int64(len(bt.msgs)))
				t.w.batcher.release(bt)
			}
			return
		}
		t.w.log.Debug("Committed to the table", "files", len(out.Committed), "already", len(out.Already), "rewrite", len(out.Rewrite),
			"duration", time.Since(start))
		if len(out.Committed) > 0 {
			t.w.metrics.commitSeconds.Observe(time.Since(start).Seconds())
			t.w.metrics.commitFiles.Observe(float64(len(out.Committed)))
			for _, f := range out.Committed {
				t.w.metrics.commitRows.Add(float64(f.Rows))
			}
		}
		if out.Snapshots > 0 {
			t.w.metrics.tableSnapshots.Set(float64(out.Snapshots))
		}
		if t.holdFirst > 0 && len(out.Committed) > 0 {
			t.w.log.Warn("Holding the ACKs of the first commit ("+config.FaultHoldFirstCommitEnv+", a fault-matrix hook)", "for", t.holdFirst)
			time.Sleep(t.holdFirst)
			t.holdFirst = 0
		}
		done := map[string]bool{}
		for _, f := range out.Committed {
			done[f.Path] = true
			ack.written <- byPath[f.Path]
		}
		already := map[uint64]bool{}
		for _, s := range out.Already {
			already[s] = true
		}
		t.w.metrics.alreadyCommitted.Add(float64(len(already)))
		rewrite := map[string]bool{}
		for _, f := range out.Rewrite {
			rewrite[f.Path] = true
		}
		var again []*batch
		for _, bt := range batches {
			switch {
			case done[bt.fileKeyPath(t.bucket)]:
			case rewrite[bt.fileKeyPath(t.bucket)]:
				in := bt.split(func(seq uint64) bool { return already[seq] })
				ack.written <- in // in the table: ACK, nothing to write
				if t.w.flush(ctx, settleCtx, bt, up, ack) {
					again = append(again, bt)
				} else {
					t.w.batcher.release(bt)
				}
			default: // every event in the table already
				ack.written <- bt
			}
		}
		batches = again
	}
	// Every event of the group is in the table now, the twins' too.
	for _, tw := range twins {
		ack.written <- tw
	}
}

// dedupeGroup keeps each event in one file of the group. A worker may hold
// two deliveries of one event in two files: its first delivery's lease
// lapsed while it could not renew it (NATS unreachable: found by the fault
// matrix's case 10g), JetStream delivered it again, and the second copy
// was batched and written before the first was committed. Committing both
// files would put the event in the table twice, since neither is in the
// table's committed set yet. So a later file of the group loses the events
// an earlier one holds, and is written again without them; their
// deliveries (the twins) are ACKed once the group is committed.
func (t *tableSink) dedupeGroup(ctx, settleCtx context.Context, batches []*batch, up *uploader, ack *acker) (keep, twins []*batch) {
	// One of an event's two deliveries is a redelivery: only their
	// sequences can have twins, and a group seldom holds any.
	redelivered := make(map[uint64]bool)
	for _, bt := range batches {
		for _, m := range bt.msgs {
			if m.deliveries > 1 {
				redelivered[m.seq] = true
			}
		}
	}
	if len(redelivered) == 0 {
		return batches, nil
	}
	seen := make(map[uint64]bool)
	for _, bt := range batches {
		if slices.ContainsFunc(bt.msgs, func(m trackedMsg) bool { return seen[m.seq] }) {
			twins = append(twins, bt.split(func(seq uint64) bool { return seen[seq] }))
			if len(bt.msgs) == 0 || !t.w.flush(ctx, settleCtx, bt, up, ack) {
				t.w.batcher.release(bt)
				continue
			}
		}
		for _, m := range bt.msgs {
			if redelivered[m.seq] {
				seen[m.seq] = true
			}
		}
		keep = append(keep, bt)
	}
	return keep, twins
}

// seqsOf is the batch's stream sequences, once each (flush sorted them).
func seqsOf(bt *batch) []uint64 {
	seqs := make([]uint64, 0, len(bt.msgs))
	for _, m := range bt.msgs {
		if n := len(seqs); n == 0 || seqs[n-1] != m.seq {
			seqs = append(seqs, m.seq)
		}
	}
	return seqs
}

func (bt *batch) fileKeyPath(bucket string) string { return "s3://" + bucket + "/" + bt.fileKey }

// split moves the events for which out is true into a batch of their own,
// for the acker, and keeps the rest. The new batch holds no memory of the
// budget: bt's stays counted until bt is released.
func (bt *batch) split(out func(seq uint64) bool) *batch {
	gone := &batch{key: bt.key}
	keep := 0
	for i := range bt.msgs {
		if out(bt.msgs[i].seq) {
			gone.msgs = append(gone.msgs, bt.msgs[i])
			continue
		}
		bt.msgs[keep] = bt.msgs[i]
		if bt.rows != nil { // else dropped (tableSink.take): flush decodes what is kept
			bt.rows[keep] = bt.rows[i]
			if w := bt.width; w > 0 {
				copy(bt.vals[keep*w:(keep+1)*w], bt.vals[i*w:(i+1)*w])
			}
		}
		keep++
	}
	bt.msgs = bt.msgs[:keep]
	if bt.rows != nil {
		bt.rows, bt.vals = bt.rows[:keep], bt.vals[:keep*bt.width]
	}
	return gone
}
