// Package sinkworker is the data plane of jetsink: it moves events from a
// NATS JetStream durable pull consumer into S3 as Parquet files, and
// acknowledges an event only once the file holding it has been written.
//
// Data flows one way through small types, each with one job:
//
//		fetcher ──► decoder ──► batcher ──► encoder ──► uploader ──► acker
//		  (pull)      │ poison    (partitions,  (Parquet)   (S3 PUT,    (ACK; NAK only
//		              ▼           memory cap,               If-None-    at shutdown)
//		          deadLetterer    leases)                   Match: *,
//		  (publish, stream acks,                            retried in
//		   then Term; else NAK)                             place)
//
//	  - Config.Workers fetcher goroutines pull from the consumer and decode in
//	    place, so JSON decoding scales with the fetchers. A decoded event
//	    keeps its jetstream.Msg until its batch is written. Without a
//	    Config.Schema an event is the analytics envelope, decoded into a Row
//	    (event.go, fastjson.go); with one, into a block of typed Parquet
//	    values, one per declared column (schema.go). Both alias the body.
//	  - The batcher groups events by partition (app_id, or the schema's
//	    partitionBy columns, + the hour or day of the event's time). A partition's open batch is cut on
//	    BatchMaxEvents, BatchMaxBytes or BatchMaxAge, when the process-wide
//	    MaxBufferedBytes cap is hit (largest partitions first), when the
//	    consumer reaches MaxAckPending, when the consumer is caught up and the
//	    partition's hour is over (the end of a backlog), and on shutdown.
//	    When the cap is reached the fetchers block, which is what bounds memory
//	    under any backlog; a fetcher blocked for long takes in what its pull
//	    iterator prefetched and pauses pulling, so every message it holds is
//	    in a batch. The batcher keeps every held message leased (InProgress)
//	    so JetStream does not redeliver it behind the worker's back, except
//	    while NATS is disconnected; it renews every lease on reconnect.
//	  - Flusher goroutines take cut batches, encode them (encoder) and PUT them
//	    under a deterministic key (uploader). A written batch goes to the
//	    acker's goroutine, which ACKs every message of the batches written
//	    meanwhile and confirms them with one flush before their memory is
//	    released. A failed upload is the sink's problem, not the events':
//	    the flusher retries it in place with backoff for as long as S3 fails,
//	    and no delivery is spent. Partitions never wait on each other, and
//	    fetching never waits on an upload except through the memory cap.
//
// Worker ties these together, serves metrics and health on MetricsAddr, and
// on shutdown stops fetching, flushes and ACKs what it can within
// ShutdownTimeout and NAKs the rest for immediate redelivery elsewhere. If
// its consumer or stream is deleted it does the same drain and Run returns
// an error, so the process exits and is restarted to bind again.
package sinkworker
