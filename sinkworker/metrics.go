package sinkworker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the worker's Prometheus series. Each Worker registers its own
// on its own registry, so tests can run several side by side.
type metrics struct {
	received     prometheus.Counter
	acked        prometheus.Counter
	nacked       prometheus.Counter
	ackErrors    prometheus.Counter
	terminated   *prometheus.CounterVec
	deadLettered prometheus.Counter
	leased       prometheus.Counter
	flushes      *prometheus.CounterVec
	flushSeconds *prometheus.HistogramVec
	files        prometheus.Counter
	fileBytes    prometheus.Counter
	fileRows     prometheus.Counter
	fileSize     prometheus.Histogram
	s3Errors     *prometheus.CounterVec
}

const namespace = "jetsink"

// newMetrics registers the worker's series on reg, and the Go runtime and
// process collectors too when withRuntime (a registry of our own; a caller's
// registry may hold them already).
func newMetrics(reg prometheus.Registerer, b func() *batcher, limit int64, withRuntime bool) *metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	}
	m := &metrics{
		received:  counter("events_received_total", "Messages fetched from the JetStream consumer."),
		acked:     counter("events_acked_total", "Events ACKed after the file holding them was written."),
		nacked:    counter("events_nacked_total", "Events NAKed for redelivery (upload failed or not written before shutdown)."),
		ackErrors: counter("ack_errors_total", "ACKs, NAKs or leases that could not be sent; those events are redelivered after AckWait."),
		leased:    counter("events_lease_renewals_total", "InProgress lease renewals sent for events waiting in a batch."),
		files:     counter("files_written_total", "Parquet objects written to S3."),
		fileBytes: counter("file_bytes_total", "Bytes of Parquet written to S3."),
		fileRows:  counter("file_rows_total", "Rows written to S3 in Parquet files."),
		deadLettered: counter("events_dead_lettered_total",
			"Poison events published to the dead-letter subject."),
		terminated: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "events_terminated_total",
			Help: "Events Term'd (never redelivered), by reason."}, []string{"reason"}),
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "flushes_total",
			Help: "Batches cut for writing, by what triggered the cut."}, []string{"reason"}),
		flushSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "flush_duration_seconds",
			Help:    "Time to encode and upload one batch, by result.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"result"}),
		fileSize: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "file_size_bytes",
			Help: "Size of each Parquet object written.", Buckets: prometheus.ExponentialBuckets(4096, 4, 10)}),
		s3Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "s3_errors_total",
			Help: "Failed S3 requests, by operation."}, []string{"operation"}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, f)
	}
	reg.MustRegister(m.received, m.acked, m.nacked, m.ackErrors, m.terminated, m.deadLettered, m.leased,
		m.flushes, m.flushSeconds, m.files, m.fileBytes, m.fileRows, m.fileSize, m.s3Errors,
		gauge("open_partitions", "Partitions with an open batch.", func() float64 {
			n, _, _ := b().stats()
			return float64(n)
		}),
		gauge("buffered_bytes", "Bytes of events held in memory, from fetch until ACK or NAK.", func() float64 {
			_, n, _ := b().stats()
			return float64(n)
		}),
		gauge("buffered_bytes_peak", "Highest buffered_bytes since the process started.", func() float64 {
			_, _, n := b().stats()
			return float64(n)
		}),
		gauge("buffered_bytes_limit", "MaxBufferedBytes: fetching blocks when buffered_bytes would exceed it.", func() float64 {
			return float64(limit)
		}),
	)
	if withRuntime {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	// Pre-create the label values users alert on, so a rate() has a series
	// to work with before the first event of its kind.
	for _, r := range []string{flushMaxEvents, flushMaxBytes, flushMaxAge, flushMemory, flushShutdown, flushAckPending, flushCaughtUp, flushIdle} {
		m.flushes.WithLabelValues(r)
	}
	for _, op := range []string{"PutObject", "HeadObject"} {
		m.s3Errors.WithLabelValues(op)
	}
	return m
}
