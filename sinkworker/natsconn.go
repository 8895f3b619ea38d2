package sinkworker

import (
	"log/slog"
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
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("NATS error", "error", err) }),
	), nil
}
