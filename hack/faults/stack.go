package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsink/jetsink/internal/testutil/s3test"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// Names the operator would render for one WarehouseSink.
const (
	streamName = "EVENTS"
	dlqStream  = "DLQ"
	dlqSubject = "dlq.events"
	bucket     = "lake"
	prefix     = "events/"
)

// binaries are the programs a case runs.
type binaries struct {
	nats, versitygw, toxiproxy, worker string
	// icebergWorker is the worker built with -tags iceberg, for the table
	// cases.
	icebergWorker string
}

// stackOpts are what a case changes in its stack.
type stackOpts struct {
	// s3Front puts the status-code fault front between toxiproxy and
	// versitygw (only the 5xx case needs it).
	s3Front bool
	// dlqMaxMsgs > 0 makes the DLQ stream that small, with DiscardNew.
	dlqMaxMsgs int64
	// worker adjusts the worker's configuration.
	worker func(*config.Config)
	// table makes the sink write an Iceberg table through a SQL catalog on
	// PostgreSQL, behind toxiproxy "pg"; the verdict then reads the table.
	table bool
	// workerEnv adds KEY=VALUE to the workers' environment (test hooks).
	workerEnv []string
}

// stack is one case's world, all on loopback and all its own:
//
//	harness ──────────────────────────────► nats-server (JetStream, file store)
//	sinkworker ─► toxiproxy "nats" ───────►      ▲ stop / SIGKILL / restart
//	sinkworker ─► toxiproxy "s3" ─► [s3Front] ─► versitygw (posix) ◄── harness reads back
//
// The harness itself talks to nats-server and versitygw directly, so its
// publishing and reading back never go through a fault.
type stack struct {
	dir, logs string
	nats, s3  *server
	pg        *server // with stackOpts.table
	toxi      *toxiproxy
	front     *s3Front
	natsProxy string // toxiproxy's listen address in front of NATS
	s3Proxy   string // and in front of S3
	pgProxy   string // and in front of PostgreSQL (table cases)

	nc     *nats.Conn
	js     jetstream.JetStream
	s3c    *s3.Client
	lake   *lake
	pub    *publisher
	cfg    config.Config
	worker *worker
	// peers are more worker processes of the same sink (addPeer).
	peers     []*worker
	workerEnv []string // beyond the configuration's, for every worker
	verbose   io.Writer
}

func startStack(ctx context.Context, bins binaries, dir string, opts stackOpts, verbose io.Writer) (_ *stack, err error) {
	s := &stack{dir: dir, logs: filepath.Join(dir, "logs")}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err := os.MkdirAll(s.logs, 0o755); err != nil {
		return nil, err
	}
	if s.nats, err = newNATS(bins, dir, s.logs); err != nil {
		return nil, err
	}
	if err := s.nats.start(); err != nil {
		return nil, err
	}
	if s.s3, err = newS3(bins, dir, s.logs); err != nil {
		return nil, err
	}
	if err := s.s3.start(); err != nil {
		return nil, err
	}
	if s.toxi, err = startToxiproxy(bins, s.logs); err != nil {
		return nil, err
	}
	if s.natsProxy, err = s.toxi.proxy("nats", s.nats.addr()); err != nil {
		return nil, err
	}
	s3Upstream := s.s3.addr()
	if opts.s3Front {
		if s.front, err = startS3Front(s.s3.addr()); err != nil {
			return nil, err
		}
		s3Upstream = s.front.addr
	}
	if s.s3Proxy, err = s.toxi.proxy("s3", s3Upstream); err != nil {
		return nil, err
	}
	if opts.table {
		if s.pg, err = newPG(s.logs); err != nil {
			return nil, err
		}
		if err := s.pg.start(); err != nil {
			return nil, err
		}
		if s.pgProxy, err = s.toxi.proxy("pg", s.pg.addr()); err != nil {
			return nil, err
		}
	}

	s.nc, err = nats.Connect("nats://"+s.nats.addr(), nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond),
		nats.Name("jetsink-faults"))
	if err != nil {
		return nil, err
	}
	if s.js, err = jetstream.New(s.nc, jetstream.WithPublishAsyncTimeout(3*time.Second)); err != nil {
		return nil, err
	}
	s.pub = newPublisher(s.js)
	s.s3c = s3test.NewClient("http://" + s.s3.addr())
	s.lake = newLake(s.s3c, bucket, prefix)
	if opts.table {
		s.lake.table = &tableReader{dsn: pgDSN(s.pg.addr()), s3: "http://" + s.s3.addr()}
	}
	if _, err := s.s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: ptr(bucket)}); err != nil {
		return nil, fmt.Errorf("create bucket: %w", err)
	}

	metricsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	s.cfg = workerConfig("nats://"+s.natsProxy, "http://"+s.s3Proxy, loopback(metricsPort))
	if opts.table {
		s.cfg.Table = &config.Table{Catalog: "sql", URI: pgDSN(s.pgProxy), Warehouse: "s3://" + bucket + "/warehouse",
			Namespace: "faults", Name: "events", CommitInterval: "500ms"}
	}
	if opts.worker != nil {
		opts.worker(&s.cfg)
	}
	if err := s.cfg.Validate(); err != nil {
		return nil, fmt.Errorf("worker configuration: %w", err)
	}
	if err := s.createStream(ctx); err != nil {
		return nil, err
	}
	if err := s.createDLQ(ctx, opts.dlqMaxMsgs); err != nil {
		return nil, err
	}
	if err := s.createConsumer(ctx); err != nil {
		return nil, err
	}
	workerBin := bins.worker
	if opts.table {
		workerBin = bins.icebergWorker
	}
	s.workerEnv = []string{
		// The operator owns the consumer; the worker must not re-create it.
		config.EnvPrefix + "CREATE_CONSUMER=false",
		"AWS_ACCESS_KEY_ID=" + s3test.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3test.SecretKey,
		"AWS_REGION=" + s3test.Region, "AWS_EC2_METADATA_DISABLED=true",
	}
	s.workerEnv = append(s.workerEnv, opts.workerEnv...)
	s.verbose = verbose
	s.worker = newWorker("sinkworker", workerBin, s.cfg, s.workerEnv, s.logs, verbose)
	return s, nil
}

// addPeer starts another worker process of the same sink, as a second pod
// of its Deployment: the same configuration but its own metrics port and
// log. It runs until the case ends (see main.go).
func (s *stack) addPeer() (*worker, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := s.cfg
	cfg.MetricsAddr = loopback(port)
	w := newWorker(fmt.Sprintf("sinkworker-peer%d", len(s.peers)+1), s.worker.bin, cfg, s.workerEnv, s.logs, s.verbose)
	if err := w.start(); err != nil {
		return nil, err
	}
	s.peers = append(s.peers, w)
	return w, nil
}

// workerConfig is the configuration the operator would render, with the
// matrix's small timings: leases and redeliveries happen within seconds.
func workerConfig(natsURL, s3Endpoint, metricsAddr string) config.Config {
	cfg := config.Default()
	cfg.NATSURL = natsURL
	cfg.Stream = streamName
	cfg.Consumer = "warehouse"
	cfg.FilterSubjects = []string{"events.>"}
	cfg.AckWait = 4 * time.Second
	cfg.MaxDeliver = 3
	cfg.DeadLetterSubject = dlqSubject
	cfg.Bucket = bucket
	cfg.Prefix = prefix
	cfg.Endpoint = s3Endpoint
	cfg.ForcePathStyle = true
	cfg.Region = s3test.Region
	cfg.Workers = 2
	cfg.BatchMaxAge = time.Second
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.MetricsAddr = metricsAddr
	return cfg
}

func (s *stack) createStream(ctx context.Context) error {
	return retry(ctx, "create stream", func(ctx context.Context) error {
		_, err := s.js.CreateStream(ctx, jetstream.StreamConfig{Name: streamName, Subjects: []string{"events.>"},
			Storage: jetstream.FileStorage})
		return err
	})
}

func (s *stack) createDLQ(ctx context.Context, maxMsgs int64) error {
	sc := jetstream.StreamConfig{Name: dlqStream, Subjects: []string{dlqSubject}, Storage: jetstream.FileStorage}
	if maxMsgs > 0 {
		sc.MaxMsgs, sc.Discard = maxMsgs, jetstream.DiscardNew
	}
	return retry(ctx, "create DLQ stream", func(ctx context.Context) error {
		_, err := s.js.CreateStream(ctx, sc)
		return err
	})
}

// createConsumer is what the operator does: create or update the durable
// consumer to ConsumerConfig.
func (s *stack) createConsumer(ctx context.Context) error {
	return retry(ctx, "create consumer", func(ctx context.Context) error {
		_, err := s.js.CreateOrUpdateConsumer(ctx, streamName, s.cfg.ConsumerConfig())
		return err
	})
}

func (s *stack) deleteConsumer(ctx context.Context) error {
	return retry(ctx, "delete consumer", func(ctx context.Context) error {
		return s.js.DeleteConsumer(ctx, streamName, s.cfg.Consumer)
	})
}

func (s *stack) deleteStream(ctx context.Context, name string) error {
	return retry(ctx, "delete stream "+name, func(ctx context.Context) error {
		err := s.js.DeleteStream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil
		}
		return err
	})
}

// retry runs fn until it succeeds (NATS may be restarting) or ctx ends.
func retry(ctx context.Context, what string, fn func(context.Context) error) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := fn(cctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// close stops everything, the worker first (SIGKILL: the case is over or
// failed; its verdict is already taken).
func (s *stack) close() {
	for _, w := range append([]*worker{s.worker}, s.peers...) {
		if w == nil {
			continue
		}
		w.mu.Lock()
		w.stopping = true
		p := w.cur
		w.mu.Unlock()
		if p != nil && !p.exited() {
			_ = p.stop(syscall.SIGKILL, time.Second)
		}
	}
	if s.nc != nil {
		s.nc.Close()
	}
	s.toxi.stop()
	s.front.close()
	if s.s3 != nil {
		s.s3.stop(syscall.SIGTERM)
	}
	if s.nats != nil {
		s.nats.stop(syscall.SIGTERM)
	}
	if s.lake != nil && s.lake.table != nil {
		s.lake.table.close()
	}
	if s.pg != nil {
		s.pg.remove()
	}
}

// pgDSN is the catalog database's URL at addr.
func pgDSN(addr string) string { return "postgres://postgres@" + addr + "/postgres?sslmode=disable" }

func ptr[T any](v T) *T { return &v }
