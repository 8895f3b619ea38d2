package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
)

// The operator's own metrics, on the manager's /metrics next to
// controller-runtime's. The per-sink gauges are set on every refresher
// tick, whether or not the status is written: the status shows lag that
// moved meaningfully, these show every tick's figures, for dashboards and
// alerts that want them current.
var (
	sinkLabels = []string{"namespace", "name"}

	sinkConsumerLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "jetsink_sink_consumer_lag",
		Help: "Messages of the sink's stream its consumer has not delivered yet (numPending), as of the last lag refresh.",
	}, sinkLabels)
	sinkConsumerAckPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "jetsink_sink_consumer_ack_pending",
		Help: "Messages delivered to the sink's workers and not acknowledged yet (numAckPending): events in open batches.",
	}, sinkLabels)
	sinkConsumerRedelivered = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "jetsink_sink_consumer_redelivered",
		Help: "Messages outstanding that were delivered more than once (numRedelivered; a gauge in NATS, not a counter).",
	}, sinkLabels)
	lagRefreshDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "jetsink_lag_refresh_duration_seconds",
		Help:    "How long one lag refresh took to read every followed consumer and write the statuses that moved.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 12), // 10 ms to about 40 s
	})
	lagStatusWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "jetsink_lag_status_writes_total",
		Help: "Status writes of the lag refresher (status.consumer of a sink whose lag moved meaningfully or was stale).",
	})
)

func init() {
	metrics.Registry.MustRegister(sinkConsumerLag, sinkConsumerAckPending, sinkConsumerRedelivered,
		lagRefreshDuration, lagStatusWrites)
}

// observeConsumer sets the sink's gauges.
func observeConsumer(key types.NamespacedName, c *jetsinkv1.ConsumerStatus) {
	sinkConsumerLag.WithLabelValues(key.Namespace, key.Name).Set(float64(c.NumPending))
	sinkConsumerAckPending.WithLabelValues(key.Namespace, key.Name).Set(float64(c.NumAckPending))
	sinkConsumerRedelivered.WithLabelValues(key.Namespace, key.Name).Set(float64(c.NumRedelivered))
}

// forgetConsumer deletes the sink's series, so a deleted sink (or one the
// refresher no longer follows) does not report its last figures forever.
func forgetConsumer(key types.NamespacedName) {
	for _, g := range []*prometheus.GaugeVec{sinkConsumerLag, sinkConsumerAckPending, sinkConsumerRedelivered} {
		g.DeleteLabelValues(key.Namespace, key.Name)
	}
}
