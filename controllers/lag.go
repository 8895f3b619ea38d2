package controllers

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// lagRefreshConcurrency bounds the consumer info requests in flight, over
// all servers together: enough to hide a remote server's round trip for a
// thousand sinks (a tick then takes well under a second), few enough that
// neither a server nor the API server (the status writes ride on the same
// slots) sees a burst of a thousand at once.
const lagRefreshConcurrency = 32

// lagTickJitter spreads each wait between ticks over interval ± 20%, so the
// refresher does not fall into step with other periodic loads on the same
// servers (the workers' own fetch cycles, other operators' resyncs).
const lagTickJitter = 0.2

// When the refresher writes status.consumer. A status write is an API
// server write pushed to every watcher of the sink (kubectl get -w, Argo
// CD, Flux, the operator's own informer); a figure that moves on every
// tick of every active sink would cost a thousand-sink fleet ~33 writes a
// second for a column nobody reads to the message. numAckPending is such
// a figure: workers hold events in open batches for up to batch.maxAge, so
// it swings by thousands between ticks of a healthy sink. So only
// numPending (what the workers have not even fetched, the figure that
// grows when a sink falls behind) can trigger a write by itself:
//   - when it crosses zero (a sink that falls behind, or catches up), or
//   - when the whole lag (numAckPending too) drops to zero: every event
//     written, which a user waits for after a backlog; or
//   - when it moves by more than lagWriteRelDelta of itself and
//     lagWriteMinDelta messages (a backlog growing or draining: 1% of a
//     million is worth showing, a hundred either way of a few hundred is
//     the workers' fetch rhythm);
//   - any other difference (numAckPending, numRedelivered, a small move
//     of numPending) is written once the figures shown are lagWriteMaxAge
//     old, so the status is never more than a few minutes behind.
//
// Nothing moving means no write at all. The Prometheus gauges (metrics.go)
// carry every tick's figures for whoever wants them current.
const (
	lagWriteMinDelta = 100
	lagWriteRelDelta = 0.01
	lagWriteMaxAge   = 5 * time.Minute
)

// destinationRecheckTicks is how many refresh intervals (five minutes at
// the default 30 s) a followed sink goes without a reconcile before the
// refresher hands it back to the reconciler anyway. The consumer's
// counters cannot tell a destination that failed after the sink converged
// (a bucket deleted, keys revoked, a policy narrowed): workers retry a
// failed upload in-process and keep the events leased, so numPending and
// numRedelivered need not move at all; numRedelivered is a gauge of
// messages outstanding that were redelivered, which also grows with any
// ordinary worker restart. Only the reconcile's S3 check sees such a
// failure, so every sink gets one this often: a fleet of a thousand costs
// about three quiet reconciles a second (a Secret read and two S3
// requests each, no write when nothing changed), and a lost bucket shows
// on its sink within minutes. Each sink's recheck is jittered by
// ±destinationRecheckJitter so a fleet created at once does not come back
// all at once.
const (
	destinationRecheckTicks  = 10
	destinationRecheckJitter = 0.1
)

// lagRefresher keeps status.consumer of healthy sinks current without
// reconciling them. A requeue per sink made a fleet of a thousand quiet
// sinks cost a thousand reconciles (Secret reads, S3 checks) every
// interval; this loop instead reads every known consumer's counters once
// per (jittered) interval, over the pool's connections (one per server and
// credentials, kept across ticks), and writes a status only when its lag
// moved meaningfully (see lagWriteMinDelta). Status patches do not wake
// the controller (its For watch only sees generation and annotation
// changes), so a converged fleet stays quiet.
//
// The reconciler tells it which sinks to follow (track, once their
// consumer is in place, with the resolved credentials so no Secret is read
// per tick) and which to drop (untrack). A consumer it cannot read is the
// reconciler's business again: the sink is dropped and sent back through
// wake, and the reconcile reports the problem as it always has. Every
// destinationRecheckTicks intervals a sink is sent back anyway, so that
// the reconcile's destination check runs.
type lagRefresher struct {
	client    client.Client
	interval  time.Duration
	consumers consumers
	// wake feeds the controller's queue (a source.Channel).
	wake chan event.TypedGenericEvent[*jetsinkv1.WarehouseSink]
	// maxAge and recheck are lagWriteMaxAge and destinationRecheckTicks
	// intervals; tests shorten them.
	maxAge, recheck time.Duration
	// slots bounds the consumer info requests in flight.
	slots chan struct{}

	mu    sync.Mutex
	sinks map[types.NamespacedName]*followed
}

// followed is what the refresher knows of one sink.
type followed struct {
	cfg config.Config
	// written is when status.consumer was last written: by the reconcile
	// that tracked the sink, or by the refresher.
	written time.Time
	// recheckAt is when the sink goes back to the reconciler.
	recheckAt time.Time
}

func newLagRefresher(c client.Client, interval time.Duration) *lagRefresher {
	return &lagRefresher{
		client:   c,
		interval: interval,
		wake:     make(chan event.TypedGenericEvent[*jetsinkv1.WarehouseSink]),
		maxAge:   lagWriteMaxAge,
		recheck:  destinationRecheckTicks * interval,
		slots:    make(chan struct{}, lagRefreshConcurrency),
		sinks:    map[types.NamespacedName]*followed{},
	}
}

// track follows the sink's consumer with cfg's connection settings,
// replacing what was known of it; the reconcile calling it has just
// written (or found current) the sink's status. A nil refresher (refresh
// off) does nothing.
func (l *lagRefresher) track(key types.NamespacedName, cfg config.Config) {
	if l == nil {
		return
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sinks[key] = &followed{cfg: cfg, written: now, recheckAt: now.Add(jittered(l.recheck, destinationRecheckJitter))}
}

// untrack stops following the sink and drops its metrics.
func (l *lagRefresher) untrack(key types.NamespacedName) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.sinks, key)
	forgetConsumer(key)
}

// NeedLeaderElection: only the leader reconciles, so only it tracks sinks
// and may write their status.
func (l *lagRefresher) NeedLeaderElection() bool { return true }

// Start refreshes every interval (± lagTickJitter) until ctx ends, then
// closes the NATS connections of its pool.
func (l *lagRefresher) Start(ctx context.Context) error {
	defer l.consumers.pooled().Close()
	timer := time.NewTimer(jittered(l.interval, lagTickJitter))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			l.refresh(ctx)
			timer.Reset(jittered(l.interval, lagTickJitter))
		}
	}
}

// jittered is d moved by up to ±frac of itself, at random.
func jittered(d time.Duration, frac float64) time.Duration {
	return d + time.Duration((rand.Float64()*2-1)*frac*float64(d))
}

type lagTarget struct {
	key     types.NamespacedName
	cfg     config.Config
	written time.Time
}

// refresh reads every tracked consumer once, grouped by connection, and
// writes the statuses whose lag moved meaningfully; it sends the sinks due
// for a destination check back to the reconciler instead.
func (l *lagRefresher) refresh(ctx context.Context) {
	log := ctrl.LoggerFrom(ctx).WithName("lag")
	start := time.Now()
	groups := map[connKey][]lagTarget{}
	var due []types.NamespacedName
	l.mu.Lock()
	n := len(l.sinks)
	for key, f := range l.sinks {
		if !start.Before(f.recheckAt) {
			// Not again before the reconcile (which tracks it anew) or,
			// should that stop early, the next recheck.
			f.recheckAt = start.Add(l.recheck)
			due = append(due, key)
			continue
		}
		k := connOf(f.cfg)
		groups[k] = append(groups[k], lagTarget{key, f.cfg, f.written})
	}
	l.mu.Unlock()

	var (
		wg             sync.WaitGroup
		mu             sync.Mutex
		written, woken int
	)
	count := func(p *int) { mu.Lock(); *p++; mu.Unlock() }
	// Servers are refreshed side by side so that one that does not answer
	// (a connect times out after natsConnectTimeout, then is backed off)
	// does not hold up the others. The connect takes no request slot.
	for _, targets := range groups {
		wg.Go(func() {
			err := l.consumers.pooled().do(ctx, targets[0].cfg, func(js jetstream.JetStream) error {
				var cwg sync.WaitGroup
				for _, t := range targets {
					select {
					case l.slots <- struct{}{}:
					case <-ctx.Done():
						return nil
					}
					cwg.Go(func() {
						defer func() { <-l.slots }()
						wrote, err := l.refreshOne(ctx, js, t)
						switch {
						case ctx.Err() != nil:
						case err != nil:
							log.V(1).Info("Cannot read consumer; reconciling the sink", "sink", t.key, "error", err.Error())
							l.lose(ctx, t.key)
							count(&woken)
						case wrote:
							count(&written)
						}
					})
				}
				cwg.Wait()
				return nil
			})
			if err != nil && ctx.Err() == nil {
				// The server is down (or backed off) or refuses the
				// credentials: every sink on it is reconciled, which
				// reports it.
				log.V(1).Info("Cannot connect to NATS; reconciling its sinks", "sinks", len(targets), "error", err.Error())
				for _, t := range targets {
					l.lose(ctx, t.key)
					count(&woken)
				}
			}
		})
	}
	wg.Wait()
	for _, key := range due {
		l.recheckSink(ctx, key)
	}
	took := time.Since(start)
	lagRefreshDuration.Observe(took.Seconds())
	log.V(1).Info("Refreshed consumer lag", "servers", len(groups), "sinks", n, "written", written, "reconciling", woken,
		"rechecking", len(due), "took", took.Round(time.Millisecond))
}

// refreshOne reads one consumer's counters into the sink's metrics and
// writes them to its status when lagWorthWriting says so; it reports
// whether it wrote. An error means the consumer could not be read.
func (l *lagRefresher) refreshOne(ctx context.Context, js jetstream.JetStream, t lagTarget) (wrote bool, err error) {
	cons, err := js.Consumer(ctx, t.cfg.Stream, t.cfg.Consumer)
	if err != nil {
		return false, err
	}
	now := consumerStatus(cons.CachedInfo())
	if !l.observe(t.key, now) {
		return false, nil // untracked meanwhile
	}
	sink := &jetsinkv1.WarehouseSink{}
	if err := l.client.Get(ctx, t.key, sink); err != nil {
		// Gone from the cache: the reconcile of its deletion untracks it.
		return false, client.IgnoreNotFound(err)
	}
	if !sink.DeletionTimestamp.IsZero() || !lagWorthWriting(sink.Status.Consumer, now, time.Since(t.written), l.maxAge) {
		return false, nil
	}
	patch := client.MergeFrom(sink.DeepCopy())
	sink.Status.Consumer = now
	if err := l.client.Status().Patch(ctx, sink, patch); err != nil {
		// Not a consumer problem: try again next tick.
		ctrl.LoggerFrom(ctx).WithName("lag").Error(err, "Failed to patch consumer status", "sink", t.key)
		return false, nil
	}
	lagStatusWrites.Inc()
	l.mu.Lock()
	if f := l.sinks[t.key]; f != nil {
		f.written = time.Now()
	}
	l.mu.Unlock()
	return true, nil
}

// observe sets the sink's gauges if the sink is still followed (an
// untracked sink's series, once deleted, must stay deleted).
func (l *lagRefresher) observe(key types.NamespacedName, c *jetsinkv1.ConsumerStatus) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sinks[key] == nil {
		return false
	}
	observeConsumer(key, c)
	return true
}

// lagWorthWriting tells whether the status should show now instead of was,
// figures shown for age: see lagWriteMinDelta.
func lagWorthWriting(was, now *jetsinkv1.ConsumerStatus, age, maxAge time.Duration) bool {
	switch {
	case was == nil || was.Name != now.Name:
		return true
	case *was == *now:
		return false
	case (was.NumPending == 0) != (now.NumPending == 0):
		return true
	case was.Lag != 0 && now.Lag == 0:
		// Everything written: the figure a user waits for. Only this way:
		// held events rising from zero is the swing described above, and
		// once 0 is shown, a return to 0 writes nothing.
		return true
	}
	lo, hi := min(was.NumPending, now.NumPending), max(was.NumPending, now.NumPending)
	if hi-lo > max(lagWriteMinDelta, uint64(lagWriteRelDelta*float64(hi))) {
		return true
	}
	return age >= maxAge
}

// lose drops the sink and queues its reconcile. Dropping it first means a
// server that stays down costs one reconcile (then its backoff), not one
// per tick.
func (l *lagRefresher) lose(ctx context.Context, key types.NamespacedName) {
	l.untrack(key)
	l.recheckSink(ctx, key)
}

// recheckSink queues the sink's reconcile.
func (l *lagRefresher) recheckSink(ctx context.Context, key types.NamespacedName) {
	ev := event.TypedGenericEvent[*jetsinkv1.WarehouseSink]{Object: &jetsinkv1.WarehouseSink{}}
	ev.Object.Name, ev.Object.Namespace = key.Name, key.Namespace
	select {
	case l.wake <- ev:
	case <-ctx.Done():
	}
}

// consumerStatus is the status the sink shows of its consumer: its name and
// counters.
func consumerStatus(info *jetstream.ConsumerInfo) *jetsinkv1.ConsumerStatus {
	return &jetsinkv1.ConsumerStatus{
		Name:           info.Name,
		Lag:            info.NumPending + uint64(max(info.NumAckPending, 0)),
		NumPending:     info.NumPending,
		NumAckPending:  int64(info.NumAckPending),
		NumRedelivered: int64(info.NumRedelivered),
	}
}
