package sinkworker

import (
	"errors"
	"sync"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// Why a batch was cut; these label jetsink_flushes_total.
const (
	flushMaxEvents = "max_events"
	flushMaxBytes  = "max_bytes"
	flushMaxAge    = "max_age"
	flushMemory    = "memory"
	flushShutdown  = "shutdown"
	// flushAckPending: the consumer's MaxAckPending is reached, so JetStream
	// delivers nothing more until something is ACKed; waiting for the other
	// triggers would stall the sink until BatchMaxAge.
	flushAckPending = "ack_pending"
	// flushCaughtUp: the consumer has nothing more to deliver and the
	// partition's hour (or day) is over, so no event is coming to fill its
	// batch: a finished backlog is written now, not BatchMaxAge later.
	flushCaughtUp = "caught_up"
	// flushIdle: the partition's hour (or day) is over and it got none of
	// the events of the last idleFor, nor of the last idleRounds × (open
	// partitions): the stream has moved on past it (a backlog replayed in
	// time order), so waiting longer only holds memory and delays the write.
	flushIdle = "idle"
)

// A partition is idle when idleRounds events per open partition passed it
// by, over at least idleFor. Events spread over the partitions at random
// would leave one without any for that many with a probability of e^-20;
// the time keeps a fetcher that stalls for a moment (each fetcher may hold
// different partitions) from making a partition look idle.
const (
	idleRounds = 20
	idleFor    = 250 * time.Millisecond
)

// eventOverhead is what a buffered event costs beyond its body and its
// slot in the batch's slices (slotSize, counted by capacity): the
// jetstream.Msg with its subject and reply strings, and the copy of its
// interface a flusher takes. The Row's strings alias the body (fastDecode).
// Measured by TestBufferedBytesMatchTheHeap against the live heap, the
// in-process NATS server's per-message state included.
const eventOverhead = 320

// A slot is what one event takes in a batch's rows, msgs and (declared
// schemas) vals slices: rowSize + msgSize + width × valueSize, the
// batcher's slotSize. A new partition's batch pre-allocates slots, so they
// are counted by capacity, not by events: 5,000 one-event partitions each
// pre-allocating 256 slots once grew the heap by 320 MiB while 3.7 MiB was
// counted.
const (
	rowSize   = int64(unsafe.Sizeof(Row{}))
	msgSize   = int64(unsafe.Sizeof(trackedMsg{}))
	valueSize = int64(unsafe.Sizeof(parquet.Value{}))
)

// newBatchSlots is the capacity of a partition's first batch; later ones
// start with what the last one needed (sizeHint).
const newBatchSlots = 32

// eventSize is what one buffered event counts against MaxBufferedBytes,
// besides its slot.
func eventSize(body []byte) int64 { return int64(len(body)) + eventOverhead }

// trackedMsg is the JetStream side of a trackedEvent: kept until the batch
// holding the event is written, then ACKed (or NAKed).
type trackedMsg struct {
	msg        jetstream.Msg
	seq        uint64
	deliveries uint64
}

// partitionKey names a partition: one app, one hour or day (UTC).
type partitionKey struct {
	app    string
	bucket int64 // Unix seconds at the start of the hour or day
}

// batch is the unit of writing: one partition's events, one Parquet file,
// ACKed or NAKed together. rows[i] and msgs[i] are the same event; with a
// declared schema, so is vals[i*width:(i+1)*width], its values in file
// order (then rows[i] only carries its partition).
type batch struct {
	key   partitionKey
	rows  []Row
	msgs  []trackedMsg
	vals  []parquet.Value
	width int
	bytes int64 // the events' eventSize: what BatchMaxBytes is checked against
	// slots is what the slices' capacity holds (slotSize each); bytes +
	// slots is what the batch counts against MaxBufferedBytes.
	slots  int64
	opened time.Time // first event's arrival; BatchMaxAge counts from here
	last   uint64    // the batcher's added count at this batch's last event
	lastAt time.Time // and when it came
	leased time.Time // when all its messages were last leased (fetch or InProgress)
	reason string    // why it was cut
	// inflight is a copy of the messages taken when a flusher took the
	// batch: the flusher sorts msgs in place, so leases read this instead.
	inflight []jetstream.Msg
	// fileKey, fileSize and fileRows describe its file once written: what
	// a table commit names.
	fileKey  string
	fileSize int64
	fileRows int
	// partition is its table partition's values by field ID (table sinks).
	partition map[int]any
}

// batcher groups events into per-partition batches and hands cut batches to
// the flushers. It owns the memory budget: every event is counted from Add
// until its batch is released after ACK or NAK, and Add blocks while the
// budget is spent, which is what backpressures the fetchers.
type batcher struct {
	maxEvents   int
	maxBytes    int64
	maxAge      time.Duration
	maxBuffered int64
	leaseAfter  time.Duration
	bucketSize  int64 // seconds
	width       int   // values per event with a declared schema, else 0
	slotSize    int64
	metrics     *metrics
	// connected reports whether the NATS connection is up. A lease sent
	// while it is down sits in the client's reconnect buffer and may reach
	// the server after AckWait, or never: it is not counted as sent.
	connected func() bool

	mu   sync.Mutex
	cond *sync.Cond // broadcast on: batch ready, bytes released, state change
	open map[partitionKey]*batch
	// sizeHint is how many events a partition's last batch held when it
	// was cut: its next batch starts with that capacity instead of growing
	// there by doubling (copying and clearing up to twice its rows).
	sizeHint map[partitionKey]int
	// cutEarly is when and why a partition's batch was last cut as idle
	// or caught up. Its next batch then waits for BatchMaxAge again (see
	// mayCutEarly): late events trickling into a past hour must not make a file
	// per quiet moment.
	cutEarly map[partitionKey]earlyCut
	ready    []*batch
	inflight map[*batch]struct{}
	// openBytes counts open batches; buffered counts everything held.
	openBytes, buffered, peak int64
	lastAdd                   time.Time // when the last event was added
	added                     uint64    // events added, ever
	closed                    bool      // no more events; flushers exit when ready is empty
	stopFetch                 bool      // draining: paused fetchers stop waiting for room
	aborted                   bool      // shutdown deadline passed: hand nothing out
}

func newBatcher(cfg config.Config, plan *schemaPlan, m *metrics) *batcher {
	b := &batcher{
		maxEvents:   cfg.BatchMaxEvents,
		maxBytes:    cfg.BatchMaxBytes,
		maxAge:      cfg.BatchMaxAge,
		maxBuffered: cfg.MaxBufferedBytes,
		// Half of AckWait leaves the other half for the lease to reach the
		// server even when the tick runs late.
		leaseAfter: cfg.AckWait / 2,
		bucketSize: 3600,
		metrics:    m,
		open:       map[partitionKey]*batch{},
		sizeHint:   map[partitionKey]int{},
		cutEarly:   map[partitionKey]earlyCut{},
		inflight:   map[*batch]struct{}{},
	}
	if cfg.TimeGranularity == config.GranularityDay {
		b.bucketSize = 86400
	}
	if plan != nil {
		b.width = plan.width
	}
	b.slotSize = rowSize + msgSize + int64(b.width)*valueSize
	b.cond = sync.NewCond(&b.mu)
	return b
}

// add buffers one decoded event, waiting for the memory budget for as
// long as it takes. It returns false, without keeping the event, once the
// batcher is closed or aborted: the caller then NAKs the message.
func (b *batcher) add(row *Row, m trackedMsg, size int64, now time.Time) bool {
	added, _ := b.addWithin(row, nil, m, size, now, 0)
	return added
}

// addWithin is add with a limit on the wait for the budget: patience 0
// waits for ever, a negative one not at all (the event is taken over the
// budget). full reports that patience ran out and the event was not kept.
// vals is the event's value block with a declared schema (copied), else nil.
func (b *batcher) addWithin(row *Row, vals []parquet.Value, m trackedMsg, size int64, now time.Time, patience time.Duration) (added, full bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	key := partitionKey{app: row.AppID, bucket: row.Timestamp.Unix() - row.Timestamp.Unix()%b.bucketSize}
	bt := b.open[key]
	need := size + b.slotsNeeded(bt, key)*b.slotSize
	var wake *time.Timer // only when it waits: not a timer per event
	// An event larger than the whole budget is let through alone, or it
	// could never be written.
	for patience >= 0 && !b.closed && !b.aborted && b.buffered > 0 && b.buffered+need > b.maxBuffered {
		if patience > 0 {
			if wake == nil {
				wake = time.AfterFunc(patience, func() {
					b.mu.Lock()
					b.cond.Broadcast()
					b.mu.Unlock()
				})
				defer wake.Stop()
			} else if time.Since(now) >= patience {
				return false, true
			}
		}
		// Cut the largest partitions until, once their uploads finish, at
		// least half the budget is free: cutting less would make many tiny
		// files under a steady backlog.
		for b.openBytes > 0 && b.openBytes+need > b.maxBuffered/2 {
			b.cut(b.largestOpen(), flushMemory)
		}
		b.cond.Wait()
		// Cuts and waits may have closed this partition's batch.
		bt = b.open[key]
		need = size + b.slotsNeeded(bt, key)*b.slotSize
	}
	if b.closed || b.aborted {
		return false, false
	}
	if bt == nil {
		n := b.newSlots(key)
		delete(b.sizeHint, key)
		bt = &batch{
			key:    key,
			rows:   make([]Row, 0, n),
			msgs:   make([]trackedMsg, 0, n),
			width:  b.width,
			opened: now,
			leased: now,
		}
		if b.width > 0 {
			bt.vals = make([]parquet.Value, 0, n*int64(b.width))
		}
		b.open[key] = bt
		b.charge(bt, n*b.slotSize)
	}
	b.lastAdd = now
	b.added++
	bt.last, bt.lastAt = b.added, now
	if n := b.slotsNeeded(bt, key); n > 0 {
		// Grown here rather than by append, so that exactly what is
		// allocated is counted.
		bt.rows = append(make([]Row, 0, cap(bt.rows)+int(n)), bt.rows...)
		bt.msgs = append(make([]trackedMsg, 0, cap(bt.msgs)+int(n)), bt.msgs...)
		if b.width > 0 {
			bt.vals = append(make([]parquet.Value, 0, cap(bt.rows)*b.width), bt.vals...)
		}
		b.charge(bt, n*b.slotSize)
	}
	bt.rows = append(bt.rows, *row)
	bt.vals = append(bt.vals, vals...)
	// One app_id string per partition instead of one per event: less to
	// hold and to scan for the garbage collector while the batch waits.
	bt.rows[len(bt.rows)-1].AppID = key.app
	bt.msgs = append(bt.msgs, m)
	bt.bytes += size
	b.openBytes += size
	b.buffered += size
	b.peak = max(b.peak, b.buffered)
	switch {
	case len(bt.rows) >= b.maxEvents:
		b.cut(bt, flushMaxEvents)
	case bt.bytes >= b.maxBytes:
		b.cut(bt, flushMaxBytes)
	}
	return true, false
}

// slotsNeeded is how many slots adding an event to bt (nil: a new batch of
// the partition key) allocates: none while it has room, else as many as it
// has (doubling), up to BatchMaxEvents.
func (b *batcher) slotsNeeded(bt *batch, key partitionKey) int64 {
	switch {
	case bt == nil:
		return b.newSlots(key)
	case len(bt.rows) < cap(bt.rows):
		return 0
	}
	return int64(max(1, min(cap(bt.rows), b.maxEvents-cap(bt.rows))))
}

// newSlots is the capacity a new batch of the partition key starts with.
func (b *batcher) newSlots(key partitionKey) int64 {
	n := min(b.maxEvents, newBatchSlots)
	if h, ok := b.sizeHint[key]; ok {
		n = max(n, min(h, b.maxEvents))
	}
	return int64(n)
}

// charge counts slot bytes of an open batch against the budget. Called with
// mu held.
func (b *batcher) charge(bt *batch, slots int64) {
	bt.slots += slots
	b.openBytes += slots
	b.buffered += slots
}

func (b *batcher) largestOpen() *batch {
	var big *batch
	for _, bt := range b.open {
		if big == nil || bt.bytes > big.bytes {
			big = bt
		}
	}
	return big
}

// cut moves an open batch to the ready queue. Called with mu held.
func (b *batcher) cut(bt *batch, reason string) {
	delete(b.open, bt.key)
	b.openBytes -= bt.bytes + bt.slots
	bt.reason = reason
	// Hints of partitions that never reopen (past hours) are dropped
	// wholesale once they are many.
	if len(b.sizeHint) >= 4096 {
		clear(b.sizeHint)
	}
	b.sizeHint[bt.key] = len(bt.rows)
	if reason == flushIdle || reason == flushCaughtUp {
		if len(b.cutEarly) >= 4096 {
			clear(b.cutEarly)
		}
		b.cutEarly[bt.key] = earlyCut{at: bt.lastAt, reason: reason}
	}
	b.ready = append(b.ready, bt)
	b.metrics.flushes.WithLabelValues(reason).Inc()
	b.cond.Broadcast()
}

// next returns the oldest ready batch, waiting for one. It returns false
// when there will be none: closed and empty, or aborted.
func (b *batcher) next() (*batch, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.ready) == 0 && !b.closed && !b.aborted {
		b.cond.Wait()
	}
	if b.aborted || len(b.ready) == 0 {
		return nil, false
	}
	bt := b.ready[0]
	b.ready[0] = nil
	b.ready = b.ready[1:]
	b.inflight[bt] = struct{}{}
	bt.inflight = make([]jetstream.Msg, len(bt.msgs))
	for i := range bt.msgs {
		bt.inflight[i] = bt.msgs[i].msg
	}
	return bt, true
}

// release returns a written or NAKed batch's bytes to the budget.
func (b *batcher) release(bt *batch) {
	b.mu.Lock()
	delete(b.inflight, bt)
	b.buffered -= bt.bytes + bt.slots
	b.cond.Broadcast()
	b.mu.Unlock()
}

// tick cuts batches older than BatchMaxAge and idle batches of past hours,
// and renews the lease of every message that has waited AckWait/2 since it
// was fetched or last leased, whether its batch is open, queued or
// uploading.
func (b *batcher) tick(now time.Time) {
	var lease [][]jetstream.Msg
	b.mu.Lock()
	idleAfter := uint64(idleRounds * len(b.open))
	for _, bt := range b.open {
		switch {
		case now.Sub(bt.opened) >= b.maxAge:
			b.cut(bt, flushMaxAge)
		case b.added-bt.last >= idleAfter && now.Sub(bt.lastAt) >= idleFor && b.mayCutEarly(bt, now, flushIdle):
			b.cut(bt, flushIdle)
		}
	}
	collect := func(bt *batch) {
		if now.Sub(bt.leased) < b.leaseAfter {
			return
		}
		bt.leased = now
		if bt.inflight != nil {
			lease = append(lease, bt.inflight)
			return
		}
		// A copy: more events are appended to an open batch while we send.
		msgs := make([]jetstream.Msg, len(bt.msgs))
		for i := range bt.msgs {
			msgs[i] = bt.msgs[i].msg
		}
		lease = append(lease, msgs)
	}
	if b.connected == nil || b.connected() {
		b.eachHeld(collect)
	}
	b.mu.Unlock()
	for _, msgs := range lease {
		for _, m := range msgs {
			switch err := m.InProgress(); {
			case err == nil:
				b.metrics.leased.Inc()
			case errors.Is(err, jetstream.ErrMsgAlreadyAckd):
				// ACKed or NAKed meanwhile.
			default:
				// The connection went down meanwhile: renewAllLeases re-leases
				// everything once it is back.
				b.metrics.leaseErrors.Inc()
			}
		}
	}
}

// renewAllLeases marks every held message as due for a lease, so the next tick
// renews them all: after a reconnect, leases sent while the connection was
// going down may never have arrived.
func (b *batcher) renewAllLeases() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.eachHeld(func(bt *batch) { bt.leased = time.Time{} })
}

// oldest is when the oldest event not yet written arrived (zero when none).
func (b *batcher) oldest() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	var t time.Time
	b.eachHeld(func(bt *batch) {
		if t.IsZero() || bt.opened.Before(t) {
			t = bt.opened
		}
	})
	return t
}

// eachHeld calls fn for every batch not yet released: open, cut and
// waiting for a flusher, or being written. Called with mu held.
func (b *batcher) eachHeld(fn func(*batch)) {
	for _, bt := range b.open {
		fn(bt)
	}
	for _, bt := range b.ready {
		fn(bt)
	}
	for bt := range b.inflight {
		fn(bt)
	}
}

// cutAll cuts every open batch and reports how many it cut.
func (b *batcher) cutAll(reason string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.open)
	for _, bt := range b.open {
		b.cut(bt, reason)
	}
	return n
}

// lastAdded is when the last event was added.
func (b *batcher) lastAdded() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastAdd
}

// earlyCut records a batch cut as idle or caught up.
type earlyCut struct {
	at     time.Time // the batch's last event
	reason string
}

// mayCutEarly reports whether bt may be cut early for reason (idle or caught
// up): its hour (or day) ended more than BatchMaxAge before now, and its
// partition was not cut early within the last BatchMaxAge. A batch of the
// live stream's previous hour is cut by BatchMaxAge by then anyway, and
// late events trickling into a past hour are written once per BatchMaxAge
// as before: the early cuts only shorten the wait at the end of a backlog.
// An idle cut does not hold back the caught-up cut, though: a partition
// that only looked idle (its fetcher stalled) must still be written when
// the backlog ends, not BatchMaxAge later.
func (b *batcher) mayCutEarly(bt *batch, now time.Time, reason string) bool {
	if e, ok := b.cutEarly[bt.key]; ok && now.Sub(e.at) < b.maxAge && (reason == flushIdle || e.reason == flushCaughtUp) {
		return false
	}
	return time.Unix(bt.key.bucket+b.bucketSize, 0).Add(b.maxAge).Before(now)
}

// cutPast cuts the open batches of past partitions, provided no event at
// all was added for quiet: the caller has seen the consumer caught up, and
// quiet makes sure the events it had already fetched are in their batches.
func (b *batcher) cutPast(now time.Time, quiet time.Duration) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Sub(b.lastAdd) < quiet {
		return 0
	}
	n := 0
	for _, bt := range b.open {
		if b.mayCutEarly(bt, now, flushCaughtUp) {
			b.cut(bt, flushCaughtUp)
			n++
		}
	}
	return n
}

// waitRoom waits until at most half the budget is held, for a paused
// fetcher: resuming at the first free byte would pause again at once.
func (b *batcher) waitRoom() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.buffered > b.maxBuffered/2 && !b.stopFetch && !b.closed && !b.aborted {
		b.cond.Wait()
	}
}

// stopFetching wakes paused fetchers for the drain.
func (b *batcher) stopFetching() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopFetch = true
	b.cond.Broadcast()
}

// close stops intake and cuts every open batch, for the shutdown drain.
func (b *batcher) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for _, bt := range b.open {
		b.cut(bt, flushShutdown)
	}
	b.cond.Broadcast()
}

// abort gives up at the shutdown deadline: it returns every batch not yet
// taken by a flusher, for the caller to NAK, and wakes everyone.
func (b *batcher) abort() []*batch {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.aborted = true
	left := b.ready
	b.ready = nil
	for _, bt := range b.open {
		delete(b.open, bt.key)
		b.openBytes -= bt.bytes + bt.slots
		left = append(left, bt)
	}
	b.cond.Broadcast()
	return left
}

// empty reports whether no batch is open or cut and waiting for a flusher.
func (b *batcher) empty() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.open) == 0 && len(b.ready) == 0
}

// stats reports the budget for metrics.
func (b *batcher) stats() (openPartitions int, buffered, peak int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.open), b.buffered, b.peak
}
