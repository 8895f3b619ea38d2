package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// faultCase is one row of the matrix: a script that publishes events while
// it breaks something, then heals it. After the script the harness waits
// (up to settle) for every event to show up, stops the worker with SIGTERM
// and takes the verdict from the bucket and the DLQ stream.
type faultCase struct {
	name  string
	about string
	opts  stackOpts
	// allowDup: the case loses the outcome of writes or replays the
	// stream, so duplicate rows are expected; they are counted, not failed.
	allowDup bool
	settle   time.Duration
	// startsWorker: the script publishes a backlog first and starts the
	// worker itself; otherwise the worker runs (and is ready) before the
	// script starts.
	startsWorker bool
	// rebind: the case removes what the worker is bound to; its note says
	// whether the worker re-bound in place or exited and was restarted.
	rebind bool
	run    func(ctx context.Context, s *stack, r *result) error
	// check, when set, runs after settling, while the worker still runs.
	check func(ctx context.Context, s *stack, r *result)
}

// The S3 cases settle for up to 40 s: the worker's retry backoff reaches
// 30 s during a long outage, so its first attempt after recovery may come
// that late.
//
// outage is how long S3 is away in case 1: well over AckWait × MaxDeliver
// (12 s), so a worker that spent deliveries on a sink outage would
// dead-letter or drop events.
const outage = 24 * time.Second

var apps = []string{"shop", "blog", "news", "mail"}

// flowOf makes good events tag-00000, tag-00001, ... over the four apps,
// timestamped when published.
func flowOf(tag string, pad int) func(int) event {
	return func(i int) event {
		return goodEvent(fmt.Sprintf("%s-%05d", tag, i), apps[i%len(apps)], time.Now(), pad)
	}
}

// withPoison makes every every-th event a poison one.
func withPoison(tag string, every int, mk func(int) event) func(int) event {
	return func(i int) event {
		if i%every == every/2 {
			return poisonEvent(fmt.Sprintf("%s-poison-%05d", tag, i))
		}
		return mk(i)
	}
}

// declaredSchema reads the harness's events as a declared schema would: the
// case's files then have the columns readback reads by name (event_id).
func declaredSchema(c *config.Config) {
	col := func(name, path, typ string, required bool) config.Column {
		return config.Column{Name: name, Path: path, Type: typ, Required: required}
	}
	c.Schema = &config.Schema{
		Columns: []config.Column{
			col("event_id", "", config.TypeString, true),
			col("app_id", "", config.TypeString, false),
			col("event", "", config.TypeString, false),
			col("timestamp", "", config.TypeTimestamp, false),
			col("user_id", "", config.TypeString, true),
			col("pad", "properties.pad", config.TypeString, false),
		},
		Time:        "timestamp",
		PartitionBy: []string{"app_id"},
		Unmapped:    config.Unmapped{Action: config.UnmappedKeep, Column: "extra"},
	}
}

// schemaPoison is an event that is good JSON but does not fit
// declaredSchema, in one of three ways by i.
func schemaPoison(tag string, every int, mk func(int) event) func(int) event {
	return func(i int) event {
		if i%every != every/2 {
			return mk(i)
		}
		id := fmt.Sprintf("%s-poison-%05d", tag, i)
		ts := time.Now().UTC().Format(time.RFC3339Nano)
		body := [...]string{
			fmt.Sprintf(`{"event_id":%q,"app_id":"shop","event":"x","timestamp":%q,"user_id":17}`, id, ts),
			fmt.Sprintf(`{"event_id":%q,"app_id":"shop","event":"x","timestamp":%q}`, id, ts),
			fmt.Sprintf(`{"event_id":%q,"app_id":"shop","event":"x","timestamp":"soon","user_id":"u"}`, id),
		}[(i/every)%3]
		return event{id: id, app: "shop", poison: true, body: []byte(body)}
	}
}

var cases = []*faultCase{
	{
		name: "1a-s3-stopped", about: "versitygw stopped for 24s (> AckWait×MaxDeliver) under live traffic",
		settle: 40 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			flow := background(func() error { return s.pub.flow(ctx, 3000, 36*time.Second, flowOf("1a", 200)) })
			if err := sleep(ctx, 4*time.Second); err != nil {
				return err
			}
			s.s3.stop(syscall.SIGTERM)
			if err := sleep(ctx, outage); err != nil {
				return err
			}
			if err := s.s3.start(); err != nil {
				return err
			}
			r.note("versitygw down %s", outage)
			return flow.wait()
		},
	},
	{
		name: "1b-s3-proxy-off", about: "toxiproxy s3 proxy disabled for 24s (connection refused)",
		settle: 40 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			flow := background(func() error { return s.pub.flow(ctx, 3000, 36*time.Second, flowOf("1b", 200)) })
			if err := sleep(ctx, 4*time.Second); err != nil {
				return err
			}
			if err := s.toxi.enable("s3", false); err != nil {
				return err
			}
			if err := sleep(ctx, outage); err != nil {
				return err
			}
			if err := s.toxi.enable("s3", true); err != nil {
				return err
			}
			r.note("s3 proxy off %s", outage)
			return flow.wait()
		},
	},
	{
		name: "2a-s3-5xx", about: "S3 answers 500 InternalError / 503 ServiceUnavailable / 503 SlowDown for 45s",
		opts: stackOpts{s3Front: true}, settle: 40 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			flow := background(func() error { return s.pub.flow(ctx, 3000, 55*time.Second, flowOf("2a", 200)) })
			if err := sleep(ctx, 4*time.Second); err != nil {
				return err
			}
			s.front.fail(true)
			err := sleep(ctx, 45*time.Second)
			s.front.fail(false)
			if err != nil {
				return err
			}
			r.note("%d requests answered 5xx over 45s", s.front.faults.Load())
			return flow.wait()
		},
	},
	{
		name: "2b-s3-resets", about: "toxiproxy limit_data (upload cut after 1.5 KB), then reset_peer (RST), 12s each",
		settle: 40 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			flow := background(func() error { return s.pub.flow(ctx, 3000, 34*time.Second, flowOf("2b", 400)) })
			if err := sleep(ctx, 4*time.Second); err != nil {
				return err
			}
			if err := s.toxi.toxic("s3", "cut", "limit_data", "upstream", map[string]any{"bytes": 1500}); err != nil {
				return err
			}
			if err := sleep(ctx, 12*time.Second); err != nil {
				return err
			}
			if err := s.toxi.removeToxic("s3", "cut"); err != nil {
				return err
			}
			if err := s.toxi.toxic("s3", "rst", "reset_peer", "upstream", map[string]any{"timeout": 0}); err != nil {
				return err
			}
			if err := sleep(ctx, 12*time.Second); err != nil {
				return err
			}
			if err := s.toxi.removeToxic("s3", "rst"); err != nil {
				return err
			}
			return flow.wait()
		},
	},
	{
		name: "3-s3-response-lost", about: "PUTs reach versitygw but every response is dropped (timeout toxic downstream) for 15s",
		allowDup: true, settle: 30 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			flow := background(func() error { return s.pub.flow(ctx, 3000, 30*time.Second, flowOf("3", 200)) })
			if err := sleep(ctx, 4*time.Second); err != nil {
				return err
			}
			_, before, _, _ := s.lake.rows(ctx)
			if err := s.toxi.toxic("s3", "mute", "timeout", "downstream", map[string]any{"timeout": 3000}); err != nil {
				return err
			}
			if err := sleep(ctx, 15*time.Second); err != nil {
				return err
			}
			_, during, _, _ := s.lake.rows(ctx)
			if err := s.toxi.removeToxic("s3", "mute"); err != nil {
				return err
			}
			r.note("%d objects written while no response came back", during-before)
			return flow.wait()
		},
	},
	{
		name: "4a-nats-restart", about: "nats-server restarted twice (SIGTERM, then SIGKILL; same store and port) under traffic",
		allowDup: true, settle: 30 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			flow := background(func() error { return s.pub.flow(ctx, 3000, 34*time.Second, flowOf("4a", 200)) })
			if err := sleep(ctx, 6*time.Second); err != nil {
				return err
			}
			if err := s.nats.restart(syscall.SIGTERM, 3*time.Second); err != nil {
				return err
			}
			if err := sleep(ctx, 10*time.Second); err != nil {
				return err
			}
			if err := s.nats.restart(syscall.SIGKILL, 3*time.Second); err != nil {
				return err
			}
			r.note("%d publishes retried", s.pub.retried())
			return flow.wait()
		},
	},
	{
		name: "4b-nats-unreachable", about: "toxiproxy nats proxy disabled for 12s (3× AckWait): leases lapse",
		allowDup: true, settle: 30 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			flow := background(func() error { return s.pub.flow(ctx, 3000, 30*time.Second, flowOf("4b", 200)) })
			if err := sleep(ctx, 6*time.Second); err != nil {
				return err
			}
			if err := s.toxi.enable("nats", false); err != nil {
				return err
			}
			if err := sleep(ctx, 12*time.Second); err != nil {
				return err
			}
			if err := s.toxi.enable("nats", true); err != nil {
				return err
			}
			return flow.wait()
		},
	},
	{
		name: "5a-consumer-deleted", about: "durable consumer deleted under the worker, re-created by the harness 5s later",
		// The re-created consumer (DeliverAll, as the operator creates it)
		// replays the stream: duplicates are expected.
		allowDup: true, settle: 30 * time.Second, rebind: true,
		run: func(ctx context.Context, s *stack, r *result) error {
			flow := background(func() error { return s.pub.flow(ctx, 3000, 30*time.Second, flowOf("5a", 200)) })
			if err := sleep(ctx, 8*time.Second); err != nil {
				return err
			}
			if err := s.deleteConsumer(ctx); err != nil {
				return err
			}
			if err := sleep(ctx, 5*time.Second); err != nil {
				return err
			}
			if err := s.createConsumer(ctx); err != nil {
				return err
			}
			return flow.wait()
		},
	},
	{
		name: "5b-stream-recreated", about: "stream deleted and re-created; new events reuse sequences 1..2000 with new ids",
		opts:   stackOpts{worker: func(c *config.Config) { c.BatchMaxEvents = 500 }},
		settle: 30 * time.Second, startsWorker: true, rebind: true,
		run: func(ctx context.Context, s *stack, r *result) error {
			// One app, one hour, batches cut at 500: both generations
			// fall into the same keys (…-EVENTS-warehouse-1-500.parquet).
			ts := time.Now()
			gen := func(tag string) []event {
				evs := make([]event, 2000)
				for i := range evs {
					evs[i] = goodEvent(fmt.Sprintf("%s-%05d", tag, i), "shop", ts, 200)
				}
				return evs
			}
			if err := s.pub.publish(ctx, gen("5b-old")); err != nil {
				return err
			}
			if err := s.worker.start(); err != nil {
				return err
			}
			if _, ok := s.settle(ctx, 30*time.Second); !ok {
				r.note("first stream not fully written before the delete")
			}
			_, objects, _, _ := s.lake.rows(ctx)
			if err := s.deleteStream(ctx, streamName); err != nil {
				return err
			}
			if err := sleep(ctx, 2*time.Second); err != nil {
				return err
			}
			if err := s.createStream(ctx); err != nil {
				return err
			}
			if err := s.createConsumer(ctx); err != nil {
				return err
			}
			r.note("%d objects from the first stream", objects)
			return s.pub.publish(ctx, gen("5b-new"))
		},
	},
	{
		name: "6a-dlq-deleted", about: "DLQ stream deleted (after the worker found it) while poison events arrive, re-created 12s later",
		settle: 45 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			// Deleted before the first poison event: what the worker
			// dead-letters before the delete would go with the stream.
			if err := s.deleteStream(ctx, dlqStream); err != nil {
				return err
			}
			flow := background(func() error {
				return s.pub.flow(ctx, 2000, 20*time.Second, withPoison("6a", 50, flowOf("6a", 200)))
			})
			if err := sleep(ctx, 12*time.Second); err != nil {
				return err
			}
			_, poison := s.pub.counts()
			if err := s.createDLQ(ctx, 0); err != nil {
				return err
			}
			r.note("%d poison events arrived while the DLQ stream was gone", poison)
			return flow.wait()
		},
	},
	{
		name: "6b-dlq-full", about: "DLQ stream full (MaxMsgs 10, DiscardNew) while poison arrives, enlarged after 12s",
		opts: stackOpts{dlqMaxMsgs: 10}, settle: 45 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			flow := background(func() error {
				return s.pub.flow(ctx, 2000, 20*time.Second, withPoison("6b", 50, flowOf("6b", 200)))
			})
			if err := sleep(ctx, 12*time.Second); err != nil {
				return err
			}
			if held, err := deadLettered(ctx, s.js, dlqStream); err == nil {
				_, poison := s.pub.counts()
				r.note("DLQ full at %d of %d poison events, then enlarged", len(held), poison)
			}
			err := retry(ctx, "enlarge DLQ stream", func(ctx context.Context) error {
				_, err := s.js.UpdateStream(ctx, jetstream.StreamConfig{Name: dlqStream, Subjects: []string{dlqSubject},
					Storage: jetstream.FileStorage, MaxMsgs: -1, Discard: jetstream.DiscardNew})
				return err
			})
			if err != nil {
				return err
			}
			return flow.wait()
		},
	},
	{
		name: "7-worker-kill-9", about: "worker SIGKILLed 5 times during uploads (S3 latency 300ms), restarted each time",
		allowDup: true, settle: 30 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			return killDuringUploads(ctx, s, 5, func() error { return s.pub.flow(ctx, 4000, 30*time.Second, flowOf("7", 200)) })
		},
	},
	{
		name: "8-5000-partitions", about: "backlog over 5,000 app_ids at once, MaxBufferedBytes 64 MiB",
		opts: stackOpts{worker: func(c *config.Config) {
			c.MaxBufferedBytes = 64 << 20
			c.BatchMaxBytes = 8 << 20
		}},
		settle: 150 * time.Second, startsWorker: true,
		run: func(ctx context.Context, s *stack, r *result) error {
			const partitions, perApp = 5000, 4
			ts := time.Now()
			evs := make([]event, 0, partitions*perApp)
			for k := range perApp {
				for a := range partitions {
					id := fmt.Sprintf("8-%04d-%d", a, k)
					evs = append(evs, goodEvent(id, fmt.Sprintf("app-%04d", a), ts, 3000))
				}
			}
			if err := s.pub.publish(ctx, evs); err != nil {
				return err
			}
			return s.worker.start()
		},
		check: func(ctx context.Context, s *stack, r *result) {
			limit := s.cfg.MaxBufferedBytes
			rss := s.worker.rss()
			r.note("peak RSS %d MiB (cap %d MiB + 100)", rss>>20, limit>>20)
			if rss == 0 {
				r.fail("peak RSS not sampled")
			} else if rss > limit+100<<20 {
				r.fail("peak RSS %d MiB above MaxBufferedBytes + 100 MiB (%d MiB)", rss>>20, (limit+100<<20)>>20)
			}
			// The case is about the worker's own accounting too: its
			// buffered-bytes peak is part of this verdict (the only
			// metric that is).
			m := s.worker.scrape()
			peak, ok := m["jetsink_buffered_bytes_peak"]
			switch {
			case !ok:
				r.fail("jetsink_buffered_bytes_peak not scraped")
			case peak > float64(limit):
				r.fail("jetsink_buffered_bytes_peak %.0f MiB above the cap %d MiB", peak/(1<<20), limit>>20)
			default:
				r.note("buffered_bytes_peak %.0f MiB", peak/(1<<20))
			}
		},
	},
	{
		name: "9-declared-schema", about: "a declared schema with poison that does not fit it; S3 5xx for 10s, then the worker SIGKILLed 3 times",
		opts:     stackOpts{s3Front: true, worker: declaredSchema},
		allowDup: true, settle: 40 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			flow := background(func() error {
				return s.pub.flow(ctx, 3000, 24*time.Second, schemaPoison("9", 40, flowOf("9", 100)))
			})
			if err := sleep(ctx, 3*time.Second); err != nil {
				return err
			}
			s.front.fail(true)
			if err := sleep(ctx, 10*time.Second); err != nil {
				return err
			}
			s.front.fail(false)
			for range 3 {
				if err := sleep(ctx, 3*time.Second); err != nil {
					return err
				}
				s.worker.kill9()
			}
			return flow.wait()
		},
		check: func(ctx context.Context, s *stack, r *result) {
			dlq, err := deadLettered(ctx, s.js, dlqStream)
			if err != nil {
				r.fail("read the DLQ: %v", err)
				return
			}
			reasons := map[string]int{}
			for _, m := range dlq {
				reasons[m.reason]++
			}
			r.note("dead-lettered by reason: %v", reasons)
			for reason := range reasons {
				if reason != "invalid_column" && reason != "missing_column" {
					r.fail("a poison event dead-lettered as %q, not for the column it breaks", reason)
				}
			}
			if reasons["invalid_column"] == 0 || reasons["missing_column"] == 0 {
				r.fail("want both invalid_column and missing_column in the DLQ, got %v", reasons)
			}
		},
	},
	{
		name: "10a-table-pg-stopped", about: "Iceberg table: the SQL catalog's PostgreSQL stopped for 15s (> AckWait×MaxDeliver) under live traffic",
		opts:   stackOpts{table: true},
		settle: 40 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			flow := background(func() error { return s.pub.flow(ctx, 3000, 24*time.Second, flowOf("10a", 100)) })
			if err := sleep(ctx, 4*time.Second); err != nil {
				return err
			}
			s.pg.stop(syscall.SIGINT)
			if err := sleep(ctx, 15*time.Second); err != nil {
				return err
			}
			if err := s.pg.start(); err != nil {
				return err
			}
			return flow.wait()
		},
	},
	{
		name: "10b-table-worker-kill-9", about: "Iceberg table: worker SIGKILLed 4 times (S3 latency 300ms), restarted each time: no duplicate",
		opts:   stackOpts{table: true},
		settle: 40 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			return killDuringUploads(ctx, s, 4, func() error { return s.pub.flow(ctx, 3000, 24*time.Second, flowOf("10b", 100)) })
		},
	},
	{
		name: "10c-table-two-workers", about: "Iceberg table: two worker processes commit a 6,000-event backlog and live traffic to one table, a commit per file",
		opts: stackOpts{table: true, worker: func(c *config.Config) {
			// A commit per file, as soon as it is written: the two race
			// for the table's metadata all the time.
			c.Table.MaxFilesPerCommit, c.BatchMaxEvents = 1, 200
		}},
		settle: 40 * time.Second, startsWorker: true,
		run: func(ctx context.Context, s *stack, r *result) error {
			backlog := make([]event, 6000)
			mk := flowOf("10c", 100)
			for i := range backlog {
				backlog[i] = mk(i)
			}
			if err := s.pub.publish(ctx, backlog); err != nil {
				return err
			}
			if err := s.worker.start(); err != nil {
				return err
			}
			if _, err := s.addPeer(); err != nil {
				return err
			}
			return s.pub.flow(ctx, 2000, 10*time.Second, flowOf("10c-live", 100))
		},
		check: func(ctx context.Context, s *stack, r *result) {
			noteCommits(s, r)
		},
	},
	{
		name: "10d-table-zombie", about: "Iceberg table: a worker frozen (SIGSTOP) for 3× AckWait while a second takes its events over, then woken (SIGCONT)",
		opts:   stackOpts{table: true},
		settle: 40 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			if _, err := s.addPeer(); err != nil {
				return err
			}
			flow := background(func() error { return s.pub.flow(ctx, 3000, 24*time.Second, flowOf("10d", 100)) })
			if err := sleep(ctx, 5*time.Second); err != nil {
				return err
			}
			s.worker.signal(syscall.SIGSTOP)
			if err := sleep(ctx, 3*s.cfg.AckWait); err != nil {
				return err
			}
			s.worker.signal(syscall.SIGCONT)
			return flow.wait()
		},
		check: func(ctx context.Context, s *stack, r *result) {
			m := s.worker.scrape()
			r.note("the zombie found %.0f of its events committed by the other, written %.0f rows itself",
				m["jetsink_table_already_committed_total"], m["jetsink_table_committed_rows_total"])
			if m["jetsink_table_already_committed_total"] == 0 {
				r.fail("the woken worker recognised no event as committed: the freeze did not make it a zombie")
			}
		},
	},
	{
		name: "10e-table-kill-commit", about: "Iceberg table: worker SIGKILLed between a commit and its ACKs (a test hook holds them), twice",
		opts:   stackOpts{table: true, workerEnv: []string{config.FaultHoldFirstCommitEnv + "=10s"}},
		settle: 60 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			flow := background(func() error { return s.pub.flow(ctx, 3000, 20*time.Second, flowOf("10e", 100)) })
			for range 2 {
				if err := waitMetric(ctx, s.worker, "jetsink_table_commit_attempts_total", 1, 20*time.Second); err != nil {
					return err
				}
				s.worker.kill9()
				if !s.worker.waitReady(ctx, 30*time.Second) {
					return fmt.Errorf("the restarted worker is not ready")
				}
			}
			return flow.wait()
		},
		check: func(ctx context.Context, s *stack, r *result) {
			m := s.worker.scrape()
			r.note("the last process found %.0f events committed by a killed one", m["jetsink_table_already_committed_total"])
			if m["jetsink_table_already_committed_total"] == 0 {
				r.fail("no redelivered event was recognised as committed: the kills did not fall between commit and ACK")
			}
		},
	},
	{
		name: "10f-table-s3-stopped", about: "Iceberg table: versitygw stopped for 15s (data files and the commit's metadata both fail) under live traffic",
		opts:   stackOpts{table: true},
		settle: 45 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			flow := background(func() error { return s.pub.flow(ctx, 3000, 24*time.Second, flowOf("10f", 100)) })
			if err := sleep(ctx, 4*time.Second); err != nil {
				return err
			}
			s.s3.stop(syscall.SIGTERM)
			if err := sleep(ctx, 15*time.Second); err != nil {
				return err
			}
			if err := s.s3.start(); err != nil {
				return err
			}
			return flow.wait()
		},
		check: func(ctx context.Context, s *stack, r *result) { noteCommits(s, r) },
	},
	{
		name: "10g-table-acks-lost", about: "Iceberg table: everything the worker sends NATS (ACKs included) swallowed for 8s (timeout toxic upstream): redeliveries",
		opts:   stackOpts{table: true},
		settle: 40 * time.Second,
		run: func(ctx context.Context, s *stack, r *result) error {
			flow := background(func() error { return s.pub.flow(ctx, 3000, 24*time.Second, flowOf("10g", 100)) })
			if err := sleep(ctx, 5*time.Second); err != nil {
				return err
			}
			if err := s.toxi.toxic("nats", "mute", "timeout", "upstream", map[string]any{"timeout": 0}); err != nil {
				return err
			}
			if err := sleep(ctx, 8*time.Second); err != nil {
				return err
			}
			if err := s.toxi.removeToxic("nats", "mute"); err != nil {
				return err
			}
			return flow.wait()
		},
		check: func(ctx context.Context, s *stack, r *result) { noteCommits(s, r) },
	},
}

// noteCommits notes the commit attempts of every worker of the case by
// outcome, and how many redelivered events they found committed.
func noteCommits(s *stack, r *result) {
	var ok, conflicts, already float64
	for _, w := range append([]*worker{s.worker}, s.peers...) {
		m := w.scrape()
		ok += m[`jetsink_table_commit_attempts_total{outcome="ok"}`]
		conflicts += m[`jetsink_table_commit_attempts_total{outcome="conflict"}`]
		already += m["jetsink_table_already_committed_total"]
	}
	r.note("%.0f commits, %.0f conflicts retried, %.0f redelivered events found committed", ok, conflicts, already)
}

// waitMetric waits until the worker's unlabelled sum of name reaches at
// least v.
func waitMetric(ctx context.Context, w *worker, name string, v float64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for w.scrape()[name] < v {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not reach %v within %s", name, v, timeout)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// killDuringUploads slows S3 to 300 ms an answer, so that uploads are
// always in flight, runs flow, and SIGKILLs the worker times times 5 s
// apart meanwhile.
func killDuringUploads(ctx context.Context, s *stack, times int, flow func() error) error {
	if err := s.toxi.toxic("s3", "slow", "latency", "downstream", map[string]any{"latency": 300}); err != nil {
		return err
	}
	t := background(flow)
	for range times {
		if err := sleep(ctx, 5*time.Second); err != nil {
			return err
		}
		s.worker.kill9()
	}
	if err := t.wait(); err != nil {
		return err
	}
	return s.toxi.removeToxic("s3", "slow")
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// task is a goroutine a script waits for.
type task struct {
	done chan struct{}
	err  error
}

func background(fn func() error) *task {
	t := &task{done: make(chan struct{})}
	go func() { t.err = fn(); close(t.done) }()
	return t
}

func (t *task) wait() error { <-t.done; return t.err }
