package controllers

import (
	"context"
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

// lagRefreshConcurrency bounds the consumer info requests in flight on one
// connection: enough to hide a remote server's round trip for a thousand
// sinks, few enough not to flood it.
const lagRefreshConcurrency = 16

// lagRefresher keeps status.consumer of healthy sinks current without
// reconciling them. A requeue per sink made a fleet of a thousand quiet
// sinks cost a thousand reconciles (Secret reads, S3 checks) every
// interval; this loop instead reads every known consumer's counters once
// per interval, over one NATS connection per server and credentials, and
// patches a status only when its numbers moved. Status patches do not
// wake the controller (its For watch only sees generation and annotation
// changes), so a converged fleet stays quiet.
//
// The reconciler tells it which sinks to follow (track, once their
// consumer is in place, with the resolved credentials so no Secret is read
// per tick) and which to drop (untrack). A consumer it cannot read is the
// reconciler's business again: the sink is dropped and sent back through
// wake, and the reconcile reports the problem as it always has. So is a
// sink whose consumer has more messages awaiting redelivery than before,
// which is how a destination failing after convergence first shows.
type lagRefresher struct {
	client    client.Client
	interval  time.Duration
	consumers consumers
	// wake feeds the controller's queue (a source.Channel).
	wake chan event.TypedGenericEvent[*jetsinkv1.WarehouseSink]

	mu    sync.Mutex
	sinks map[types.NamespacedName]config.Config
}

func newLagRefresher(c client.Client, interval time.Duration) *lagRefresher {
	return &lagRefresher{
		client:   c,
		interval: interval,
		wake:     make(chan event.TypedGenericEvent[*jetsinkv1.WarehouseSink]),
		sinks:    map[types.NamespacedName]config.Config{},
	}
}

// track follows the sink's consumer with cfg's connection settings,
// replacing what was known of it. A nil refresher (refresh off) does nothing.
func (l *lagRefresher) track(key types.NamespacedName, cfg config.Config) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sinks[key] = cfg
}

// untrack stops following the sink.
func (l *lagRefresher) untrack(key types.NamespacedName) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.sinks, key)
}

// NeedLeaderElection: only the leader reconciles, so only it tracks sinks
// and may write their status.
func (l *lagRefresher) NeedLeaderElection() bool { return true }

// Start refreshes every interval until ctx ends.
func (l *lagRefresher) Start(ctx context.Context) error {
	tick := time.NewTicker(l.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			l.refresh(ctx)
		}
	}
}

// connKey is what two sinks must share to use one NATS connection: the
// server and every credential field NATSOptions reads.
type connKey struct {
	url, user, password, token, nkeySeed, creds string
}

func connOf(cfg config.Config) connKey {
	return connKey{cfg.NATSURL, cfg.NATSUser, cfg.NATSPassword, cfg.NATSToken, cfg.NATSNKeySeed, cfg.NATSCreds}
}

type lagTarget struct {
	key types.NamespacedName
	cfg config.Config
}

// refresh reads every tracked consumer once, one connection per server and
// credentials, and patches the statuses whose counters changed.
func (l *lagRefresher) refresh(ctx context.Context) {
	log := ctrl.LoggerFrom(ctx).WithName("lag")
	start := time.Now()
	groups := map[connKey][]lagTarget{}
	l.mu.Lock()
	n := len(l.sinks)
	for key, cfg := range l.sinks {
		groups[connOf(cfg)] = append(groups[connOf(cfg)], lagTarget{key, cfg})
	}
	l.mu.Unlock()

	var (
		wg             sync.WaitGroup
		mu             sync.Mutex
		patched, woken int
	)
	count := func(p *int) { mu.Lock(); *p++; mu.Unlock() }
	// Servers are refreshed side by side so that one that does not answer
	// (a connect times out after seconds) does not hold up the others.
	for _, targets := range groups {
		wg.Go(func() {
			err := l.consumers.withJetStream(ctx, targets[0].cfg, func(js jetstream.JetStream) error {
				sem := make(chan struct{}, lagRefreshConcurrency)
				var cwg sync.WaitGroup
				for _, t := range targets {
					sem <- struct{}{}
					cwg.Go(func() {
						defer func() { <-sem }()
						changed, redelivering, err := l.refreshOne(ctx, js, t)
						switch {
						case ctx.Err() != nil:
						case err != nil:
							log.V(1).Info("Cannot read consumer; reconciling the sink", "sink", t.key, "error", err.Error())
							l.lose(ctx, t.key)
							count(&woken)
						case redelivering:
							log.V(1).Info("Redeliveries grew; reconciling the sink", "sink", t.key)
							l.recheck(ctx, t.key)
							count(&woken)
						}
						if changed {
							count(&patched)
						}
					})
				}
				cwg.Wait()
				return nil
			})
			if err != nil && ctx.Err() == nil {
				// The server is down or refuses the credentials: every
				// sink on it is reconciled, which reports it.
				log.V(1).Info("Cannot connect to NATS; reconciling its sinks", "url", targets[0].cfg.NATSURL,
					"sinks", len(targets), "error", err.Error())
				for _, t := range targets {
					l.lose(ctx, t.key)
					count(&woken)
				}
			}
		})
	}
	wg.Wait()
	log.V(1).Info("Refreshed consumer lag", "servers", len(groups), "sinks", n, "patched", patched, "reconciling", woken,
		"took", time.Since(start).Round(time.Millisecond))
}

// refreshOne reads one consumer's counters and patches the sink's status
// when they changed; it reports whether it patched, and whether more
// messages await redelivery than last time: workers NAK what they cannot
// write, so that is the first sign of a destination gone bad after the
// sink converged (a deleted bucket, revoked keys), which only a reconcile
// checks and reports. An error means the consumer could not be read.
func (l *lagRefresher) refreshOne(ctx context.Context, js jetstream.JetStream, t lagTarget) (changed, redelivering bool, err error) {
	cons, err := js.Consumer(ctx, t.cfg.Stream, t.cfg.Consumer)
	if err != nil {
		return false, false, err
	}
	now := consumerStatus(cons.CachedInfo())
	sink := &jetsinkv1.WarehouseSink{}
	if err := l.client.Get(ctx, t.key, sink); err != nil {
		// Gone from the cache: the reconcile of its deletion untracks it.
		return false, false, client.IgnoreNotFound(err)
	}
	was := sink.Status.Consumer
	if !sink.DeletionTimestamp.IsZero() || (was != nil && *was == *now) {
		return false, false, nil
	}
	redelivering = was != nil && now.NumRedelivered > was.NumRedelivered
	patch := client.MergeFrom(sink.DeepCopy())
	sink.Status.Consumer = now
	if err := l.client.Status().Patch(ctx, sink, patch); err != nil {
		// Not a consumer problem: try again next tick.
		ctrl.LoggerFrom(ctx).WithName("lag").Error(err, "Failed to patch consumer status", "sink", t.key)
		return false, false, nil
	}
	return true, redelivering, nil
}

// lose drops the sink and queues its reconcile. Dropping it first means a
// server that stays down costs one reconcile (then its backoff), not one
// per tick.
func (l *lagRefresher) lose(ctx context.Context, key types.NamespacedName) {
	l.untrack(key)
	l.recheck(ctx, key)
}

// recheck queues the sink's reconcile.
func (l *lagRefresher) recheck(ctx context.Context, key types.NamespacedName) {
	ev := event.TypedGenericEvent[*jetsinkv1.WarehouseSink]{Object: &jetsinkv1.WarehouseSink{}}
	ev.Object.Name, ev.Object.Namespace = key.Name, key.Namespace
	select {
	case l.wake <- ev:
	case <-ctx.Done():
	}
}

// consumerStatus is the status the sink shows of its consumer's counters.
func consumerStatus(info *jetstream.ConsumerInfo) *jetsinkv1.ConsumerStatus {
	return &jetsinkv1.ConsumerStatus{
		Lag:            info.NumPending + uint64(max(info.NumAckPending, 0)),
		NumPending:     info.NumPending,
		NumAckPending:  int64(info.NumAckPending),
		NumRedelivered: int64(info.NumRedelivered),
	}
}
