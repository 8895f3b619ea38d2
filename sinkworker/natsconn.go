package sinkworker

import (
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// natsOptions are the credentials' connect options (shared with the
// operator, see config.NATSOptions) plus the worker's reconnect policy: a
// worker keeps reconnecting forever, because NATS being away is an outage to
// ride out (readiness reports it), not a reason to exit and lose the
// batches it holds. reconnected runs after each reconnect.
func natsOptions(cfg config.Config, log *slog.Logger, reconnected func()) ([]nats.Option, error) {
	opts, err := cfg.NATSOptions("jetsink-sinkworker/" + cfg.Stream + "/" + cfg.Consumer)
	if err != nil {
		return nil, err
	}
	return append(opts,
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("Disconnected from NATS", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("Reconnected to NATS", "url", nc.ConnectedUrlRedacted())
			reconnected()
		}),
		nats.ReconnectErrHandler(connectFailed(log)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("NATS error", "error", err) }),
	), nil
}

// connectFailedEvery is how often a connect error that does not change is
// logged again.
const connectFailedEvery = time.Minute

// connectFailed logs why a connect attempt failed: without it a worker
// that can never connect (a wrong CA, a refused client certificate, bad
// credentials) retries silently for ever. Attempts come every
// ReconnectWait, so the same error is logged once, then once a minute.
func connectFailed(log *slog.Logger) nats.ConnErrHandler {
	var (
		mu     sync.Mutex
		last   string
		logged time.Time
	)
	return func(_ *nats.Conn, err error) {
		if err == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if err.Error() == last && time.Since(logged) < connectFailedEvery {
			return
		}
		last, logged = err.Error(), time.Now()
		log.Warn("Could not connect to NATS", "error", err)
	}
}
