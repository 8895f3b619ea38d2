package sinkworker

import (
	"time"

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

	// What an operator alerts on when something outside the worker fails.
	fetchErrors    prometheus.Counter
	fetchersLive   prometheus.Gauge
	reconnects     prometheus.Counter
	redelivered    prometheus.Counter
	leaseErrors    prometheus.Counter
	uploads        *prometheus.CounterVec
	uploadRetries  prometheus.Counter
	alreadyWritten *prometheus.CounterVec
	// With an Iceberg table: commit attempts by outcome, and
	// redelivered events found committed (ACKed, not written again).
	commits            *prometheus.CounterVec
	alreadyCommitted   prometheus.Counter
	commitSeconds      prometheus.Histogram
	commitFiles        prometheus.Histogram
	commitRows         prometheus.Counter
	tableSnapshots     prometheus.Gauge
	lastUpload         prometheus.Gauge
	deadLetterErrors   prometheus.Counter
	deadLetterNoStream prometheus.Gauge
}

// Outcomes of an upload attempt (jetsink_upload_attempts_total) and of a
// 412 on the batch's key (jetsink_already_written_total).
const (
	uploadOK      = "ok"
	uploadError   = "error"
	uploadTimeout = "timeout"
	// writtenIdentical: the key holds this very file (an earlier attempt
	// succeeded but its answer was lost): the batch is written.
	writtenIdentical = "identical"
	// writtenDifferent: the key holds another file; the batch is written
	// under a key of its own.
	writtenDifferent = "different"
)

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
	m.fetchErrors = counter("fetch_errors_total", "Errors pulling from the consumer (missed heartbeats, disconnects, a deleted consumer).")
	m.fetchersLive = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "fetchers_live",
		Help: "Fetcher goroutines pulling from the consumer; below the configured workers means events are not moving."})
	m.reconnects = counter("nats_reconnects_total", "Reconnections to NATS.")
	m.redelivered = counter("events_redelivered_total", "Messages received that JetStream had delivered before (a lost lease, ACK or pod).")
	m.leaseErrors = counter("lease_errors_total", "InProgress lease renewals that could not be sent.")
	m.uploads = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "upload_attempts_total",
		Help: "S3 upload attempts of a batch's file, by outcome (ok, error, timeout)."}, []string{"outcome"})
	m.uploadRetries = counter("upload_retries_total", "Upload attempts that repeated a failed one: the batch stays held and leased meanwhile.")
	m.alreadyWritten = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "already_written_total",
		Help: "Uploads refused because the key exists (412), by what it held: identical (this file: written) or different (written under its own key)."},
		[]string{"outcome"})
	m.commits = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "table_commit_attempts_total",
		Help: "Iceberg commit attempts, by outcome (ok, conflict, unknown, found: an unknown outcome read back as committed)."},
		[]string{"outcome"})
	m.alreadyCommitted = counter("table_already_committed_total",
		"Events found in the table already (a redelivery after a lost ACK, a zombie's events): ACKed, not written again.")
	m.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "table_commit_duration_seconds",
		Help:    "Time from a commit's start to its success, conflicts and retries included.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)})
	m.commitFiles = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "table_commit_files",
		Help: "Data files per successful commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)})
	m.commitRows = counter("table_committed_rows_total", "Rows committed to the table.")
	m.tableSnapshots = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "table_snapshots",
		Help: "Snapshots of the table after this worker's last commit: it grows until snapshots are expired."})
	m.lastUpload = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "last_upload_success_timestamp_seconds",
		Help: "Unix time of the last successful upload; time() minus this is how long nothing was written."})
	m.deadLetterErrors = counter("dead_letter_errors_total", "Dead-letter publishes that no stream acknowledged; the event is kept (NAKed for a later retry), not Term'd.")
	m.deadLetterNoStream = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "dead_letter_stream_missing",
		Help: "1 while no JetStream stream acknowledges publishes to the dead-letter subject: a configuration error; poison waits in the source stream."})
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, f)
	}
	reg.MustRegister(m.received, m.acked, m.nacked, m.ackErrors, m.terminated, m.deadLettered, m.leased,
		m.flushes, m.flushSeconds, m.files, m.fileBytes, m.fileRows, m.fileSize, m.s3Errors,
		m.fetchErrors, m.fetchersLive, m.reconnects, m.redelivered, m.leaseErrors, m.uploads, m.uploadRetries,
		m.alreadyWritten, m.commits, m.alreadyCommitted, m.commitSeconds, m.commitFiles, m.commitRows, m.tableSnapshots, m.lastUpload, m.deadLetterErrors, m.deadLetterNoStream,
		gauge("oldest_unwritten_batch_age_seconds", "Age of the oldest event held and not yet written (0 when none).", func() float64 {
			if t := b().oldest(); !t.IsZero() {
				return time.Since(t).Seconds()
			}
			return 0
		}),
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
	for _, o := range []string{uploadOK, uploadError, uploadTimeout} {
		m.uploads.WithLabelValues(o)
	}
	for _, o := range []string{writtenIdentical, writtenDifferent} {
		m.alreadyWritten.WithLabelValues(o)
	}
	for _, op := range []string{"PutObject", "HeadObject"} {
		m.s3Errors.WithLabelValues(op)
	}
	return m
}
