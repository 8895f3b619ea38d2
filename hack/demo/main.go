// Command demo is `make demo`: it starts the local stack (package
// hack/localstack/stack), creates the EVENTS stream, a DLQ stream and the
// bucket, applies the sink in sink.yaml, publishes realistic analytics events
// from several apps (and a few poison ones), and shows while they flow what a
// user would look at: `kubectl get sinks`, the Parquet objects under their
// Hive-style keys, the dead-letter count, the workers' own metrics and a few
// rows read back. A second sink commits the same events exactly once to an
// Iceberg table (a SQL catalog on the stack's PostgreSQL), shown through a
// reader that is not iceberg-go (internal/icebergread). It then stops
// everything, leaves the bucket's files under .demo/, and prints one
// summary line:
//
//	demo: published=<N> poison=<P> rows=<R> files=<F> dead_lettered=<D> table_rows=<T> table_events=<E> table_files=<TF> table_snapshots=<S>
package main

import (
	"bytes"
	"context"
	"database/sql"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	_ "github.com/jackc/pgx/v5/stdlib" // the catalog's database
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"
	"k8s.io/apimachinery/pkg/types"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/hack/cluster"
	"github.com/jetsink/jetsink/hack/localstack/stack"
	"github.com/jetsink/jetsink/internal/icebergread"
	"github.com/jetsink/jetsink/sinkworker"
)

//go:embed sink.yaml
var sinkYAML string

const (
	namespace = "analytics"
	sinkName  = "events"
	tableSink = "events-table"
	bucket    = "lake"
	prefix    = "events/"
	// The table sink's table: analytics.events in the catalog "jetsink"
	// (the name the workers give iceberg-go's SQL catalog).
	tableNamespace, tableName = "analytics", "events"
)

func main() {
	events := flag.Int("events", 40000, "Good events to publish.")
	poison := flag.Int("poison", 40, "Poison events to publish among them.")
	out := flag.String("out", ".demo", "Where the bucket's files are left.")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{start: time.Now(), wantGood: *events, wantPoison: *poison, rows: map[string]int64{}}
	err := d.run(ctx)
	if d.stack != nil {
		d.stage("Stopping the stack")
		if serr := d.stack.Stop(); serr != nil {
			fmt.Fprintln(os.Stderr, "demo: stop:", serr)
		}
		if left := cluster.Leftovers(); len(left) > 0 {
			fmt.Fprintln(os.Stderr, "demo: the cluster left behind:", strings.Join(left, ", "))
			err = errors.Join(err, errors.New("the cluster did not stop cleanly"))
		}
		if cerr := d.keepFiles(*out); cerr != nil {
			fmt.Fprintln(os.Stderr, "demo:", cerr)
		} else if rerr := d.recount(filepath.Join(*out, bucket), prefix); rerr != nil {
			fmt.Fprintln(os.Stderr, "demo: recount the kept files:", rerr)
		} else {
			fmt.Printf("   the bucket's files are in %s/%s/ (open them with duckdb, pandas, spark...), the logs in %s/logs/\n", *out, bucket, *out)
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "demo: interrupted")
		d.summary()
		os.Exit(130)
	case err != nil:
		fmt.Fprintln(os.Stderr, "demo: FAILED:", err)
		d.summary()
		os.Exit(1)
	}
	d.summary()
}

// recount sets the row and file counts from the files the stack left
// behind under prefix (the table's files are counted by the table), after
// every worker drained: the summary describes the bucket as it finally is.
func (d *demo) recount(dir, prefix string) error {
	rows := map[string]int64{}
	err := filepath.WalkDir(filepath.Join(dir, prefix), func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(path, ".parquet") {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		info, err := f.Stat()
		if err != nil {
			return err
		}
		pf, err := parquet.OpenFile(f, info.Size())
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		rel, _ := filepath.Rel(dir, path)
		rows[filepath.ToSlash(rel)] = pf.NumRows()
		return nil
	})
	if err != nil {
		return err
	}
	d.rows = rows
	return nil
}

type demo struct {
	start      time.Time
	stack      *stack.Stack
	js         jetstream.JetStream
	wantGood   int
	wantPoison int

	published, poisoned int
	rows                map[string]int64 // per object key
	deadLettered        uint64
	stageN              int

	catalog *sql.DB
	table   *icebergread.Table // as last read
	// tableEvents is the number of distinct event_ids in the table, read
	// from its data files at the end.
	tableEvents int
}

func (d *demo) stage(msg string) {
	d.stageN++
	fmt.Printf("\n==> [%d] %s   (t+%s)\n", d.stageN, msg, time.Since(d.start).Round(time.Second))
}

func (d *demo) info(format string, args ...any) {
	fmt.Printf("   "+format+"\n", args...)
}

func (d *demo) run(ctx context.Context) error {
	d.stage("Starting the local stack: a single-node Kubernetes (control plane, containerd, kubelet), NATS JetStream, versitygw (S3), and helm install of the operator")
	dir, err := os.MkdirTemp("", "jetsink-demo-")
	if err != nil {
		return err
	}
	d.stack, err = stack.Start(ctx, stack.Options{Dir: dir, Progress: indent{os.Stdout}})
	if err != nil {
		return err
	}
	s := d.stack
	d.info("kubeconfig %s, NATS %s, S3 %s", s.Kubeconfig, s.NATSURL, s.S3URL)

	d.stage("Creating the EVENTS stream (events.>), the DLQ stream (dlq.>) and the bucket s3://" + bucket)
	nc, err := nats.Connect(s.NATSURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	d.js, err = jetstream.New(nc)
	if err != nil {
		return err
	}
	for name, subj := range map[string]string{"EVENTS": "events.>", "DLQ": "dlq.>"} {
		if _, err := d.js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}, Storage: jetstream.FileStorage}); err != nil {
			return fmt.Errorf("create stream %s: %w", name, err)
		}
	}
	if err := s.CreateBucket(ctx, bucket); err != nil {
		return err
	}

	backlog := d.wantGood * 3 / 4
	d.stage(fmt.Sprintf("Publishing a backlog of %d analytics events from 3 apps (with poison among them) before any sink exists", backlog))
	rng := rand.New(rand.NewPCG(42, 7))
	if err := d.publish(ctx, rng, backlog, d.wantPoison*3/4, 1, 0); err != nil {
		return err
	}
	d.info("stream EVENTS holds %d good + %d poison events", d.published, d.poisoned)

	d.stage("Applying the WarehouseSinks (hack/demo/sink.yaml: Parquet files, and an Iceberg table) and their Secrets (S3, the catalog's password)")
	if err := s.EnsureNamespace(ctx, namespace); err != nil {
		return err
	}
	if err := s.Client.Create(ctx, stack.S3Secret(namespace, "s3-creds", stack.S3AccessKey, stack.S3SecretKey)); err != nil {
		return err
	}
	if err := s.Client.Create(ctx, stack.CatalogSecret(namespace, "catalog-creds")); err != nil {
		return err
	}
	if d.catalog, err = sql.Open("pgx", "postgres://postgres@"+s.CatalogAddr+"/"+stack.CatalogDatabase+"?sslmode=disable"); err != nil {
		return err
	}
	defer d.catalog.Close()
	manifest := strings.NewReplacer("${NATS_URL}", s.NATSURL, "${S3_ENDPOINT}", s.S3URL, "${CATALOG_URI}", s.CatalogURI).Replace(sinkYAML)
	out, err := s.Kubectl(ctx, strings.NewReader(manifest), "apply", "-f", "-")
	if err != nil {
		return err
	}
	d.info("$ kubectl apply -f hack/demo/sink.yaml\n   %s", strings.TrimSpace(out))

	d.stage(fmt.Sprintf("The operator creates the consumers and the Deployments, the kubelet starts 3 worker containers; %d more events arrive live", d.wantGood-backlog))
	pubDone := make(chan error, 1)
	go func() {
		pubDone <- d.publish(ctx, rng, d.wantGood-backlog, d.wantPoison-d.wantPoison*3/4, 8, 12*time.Second)
	}()
	deadline := time.Now().Add(100 * time.Second)
	publishing := true
	shownPods := false
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-pubDone:
			if err != nil {
				return err
			}
			publishing = false
			pubDone = nil
			d.info("published all %d good + %d poison events; waiting for the lag to reach 0", d.published, d.poisoned)
			continue
		case <-tick.C:
		}
		sink, done := d.progress(ctx, publishing)
		if !shownPods && sink != nil && sink.Status.ReadyReplicas == 2 {
			shownPods = true
			pods, err := s.Pods(ctx, types.NamespacedName{Namespace: namespace, Name: sinkName})
			if err != nil {
				return err
			}
			for _, p := range pods {
				d.info("worker pod %s: container %.25s…, metrics on %s, ready=%v", p.Name, strings.TrimPrefix(p.ContainerID, "containerd://"), p.MetricsURL(), p.Ready)
			}
		}
		if done {
			d.info("done: lag 0, nothing awaiting an ACK, %d rows in the bucket, %d dead-lettered", d.totalRows(), d.deadLettered)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the sink did not catch up within the demo's time limit (rows %d of %d)", d.totalRows(), d.published)
		}
	}

	d.stage("What the user sees: kubectl get sinks, the node, the Deployments, the pods, the metrics Service's endpoints and the pods' own logs")
	d.kubectl(ctx, "get", "sinks", "-n", namespace)
	d.kubectl(ctx, "get", "nodes,pods", "-A", "-o", "wide")
	d.kubectl(ctx, "get", "deployment,service,endpointslices,pdb", "-n", namespace)
	d.kubectl(ctx, "logs", "-n", namespace, "deploy/"+sinkName, "--tail=4")
	d.kubectl(ctx, "logs", "-n", stack.ManagerNamespace, "deploy/"+stack.ManagerDeployment, "--tail=3")
	d.showMetrics(ctx)

	d.stage("The Parquet objects under their Hive-style keys")
	d.showObjects()

	d.stage("A few rows read back from one file with parquet-go")
	if err := d.showRows(ctx); err != nil {
		return err
	}

	d.stage("The dead-letter subject: poison events with the reason in their headers")
	d.showDeadLetters(ctx)

	d.stage("The Iceberg table analytics.events, read without iceberg-go: the catalog's row in PostgreSQL, metadata.json, the Avro manifests, the Parquet data files")
	return d.showTable(ctx)
}

func (d *demo) kubectl(ctx context.Context, args ...string) {
	out, err := d.stack.Kubectl(ctx, nil, args...)
	fmt.Printf("   $ kubectl %s\n", strings.Join(args, " "))
	if err != nil {
		fmt.Printf("   %v\n", err)
		return
	}
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		fmt.Println("   " + l)
	}
}

func (d *demo) getSink(ctx context.Context) (*jetsinkv1.WarehouseSink, error) {
	sink := &jetsinkv1.WarehouseSink{}
	err := d.stack.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: sinkName}, sink)
	return sink, err
}

// progress prints one status block and reports whether the sink is done.
func (d *demo) progress(ctx context.Context, publishing bool) (*jetsinkv1.WarehouseSink, bool) {
	if err := d.scanObjects(ctx); err != nil {
		d.info("listing the bucket: %v", err)
	}
	if st, err := d.js.Stream(ctx, "DLQ"); err == nil {
		if info, err := st.Info(ctx); err == nil {
			d.deadLettered = info.State.Msgs
		}
	}
	sink, err := d.getSink(ctx)
	if err != nil {
		return nil, false
	}
	var lag uint64
	var ackPending int64
	if c := sink.Status.Consumer; c != nil {
		lag, ackPending = c.Lag, c.NumAckPending
	}
	state := "publishing"
	if !publishing {
		state = "draining"
	}
	fmt.Printf("\n   [t+%s] %s: published %d good + %d poison | lag %d (of which in open batches, awaiting ACK: %d) | objects %d | rows %d | dead-lettered %d | table rows %d\n",
		time.Since(d.start).Round(time.Second), state, d.published, d.poisoned, lag, ackPending, len(d.rows), d.totalRows(), d.deadLettered, d.tableRows())
	out, err := d.stack.Kubectl(ctx, nil, "get", "sinks", "-n", namespace)
	if err == nil {
		for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			fmt.Println("   " + l)
		}
	}
	tableRows := d.readTable(ctx)
	done := !publishing && lag == 0 && ackPending == 0 && d.totalRows() >= int64(d.published) &&
		d.deadLettered >= uint64(d.poisoned) && tableRows >= int64(d.published)
	return sink, done
}

func (d *demo) totalRows() int64 {
	var n int64
	for _, r := range d.rows {
		n += r
	}
	return n
}

// scanObjects lists the bucket and counts the rows of each new object from
// its Parquet footer.
func (d *demo) scanObjects(ctx context.Context) error {
	c := d.stack.S3Client()
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			if _, ok := d.rows[key]; ok || !strings.HasSuffix(key, ".parquet") {
				continue
			}
			body, err := d.get(ctx, key)
			if err != nil {
				return err
			}
			f, err := parquet.OpenFile(bytes.NewReader(body), int64(len(body)))
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			d.rows[key] = f.NumRows()
		}
	}
	return nil
}

func (d *demo) get(ctx context.Context, key string) ([]byte, error) {
	out, err := d.stack.S3Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(out.Body)
}

func (d *demo) showObjects() {
	type part struct {
		files int
		rows  int64
		first string
	}
	parts := map[string]*part{}
	for k, n := range d.rows {
		dir := k[:strings.LastIndex(k, "/")+1]
		p := parts[dir]
		if p == nil {
			p = &part{}
			parts[dir] = p
		}
		p.files++
		p.rows += n
		if p.first == "" || k < p.first {
			p.first = k
		}
	}
	dirs := make([]string, 0, len(parts))
	for dir := range parts {
		dirs = append(dirs, dir)
	}
	sort.Strings(dirs)
	d.info("%d objects in %d partitions (app_id × date × hour):", len(d.rows), len(parts))
	for _, dir := range dirs {
		p := parts[dir]
		d.info("s3://%s/%-55s %2d files %6d rows", bucket, dir, p.files, p.rows)
	}
	d.info("e.g. s3://%s/%s", bucket, parts[dirs[0]].first)
}

func (d *demo) showRows(ctx context.Context) error {
	var key string
	for k := range d.rows {
		if key == "" || d.rows[k] > d.rows[key] {
			key = k
		}
	}
	if key == "" {
		return errors.New("no Parquet object in the bucket")
	}
	body, err := d.get(ctx, key)
	if err != nil {
		return err
	}
	rows, err := parquet.Read[sinkworker.Row](bytes.NewReader(body), int64(len(body)))
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	d.info("s3://%s/%s: %d rows; the first 4:", bucket, key, len(rows))
	for _, r := range rows[:min(4, len(rows))] {
		who := "user_id=" + r.UserID
		if r.UserID == "" {
			who = "anonymous_id=" + r.AnonymousID
		}
		d.info("  event_id=%s app_id=%s event=%s timestamp=%s %s _subject=%s _stream_seq=%d",
			r.EventID, r.AppID, r.Event, r.Timestamp.Format(time.RFC3339), who, r.Subject, r.StreamSeq)
		d.info("    properties=%s", r.Properties)
	}
	return nil
}

func (d *demo) showMetrics(ctx context.Context) {
	eps, err := d.stack.ScrapeService(ctx, namespace, sinkName+"-metrics")
	if err != nil {
		d.info("scraping the metrics Service: %v", err)
		return
	}
	d.info("the workers' own counters, scraped from the %d endpoints of Service %s-metrics:", len(eps), sinkName)
	total := map[string]float64{}
	for _, ep := range eps {
		m := ep.Metrics
		d.info("  %s (%s): received=%.0f acked=%.0f files=%.0f rows=%.0f dead_lettered=%.0f", ep.Pod, ep.URL,
			m["jetsink_events_received_total"], m["jetsink_events_acked_total"], m["jetsink_files_written_total"],
			m["jetsink_file_rows_total"], m["jetsink_events_dead_lettered_total"])
		for k, v := range m {
			total[k] += v
		}
	}
	d.info("  all workers: rows=%.0f in files=%.0f, dead_lettered=%.0f", total["jetsink_file_rows_total"],
		total["jetsink_files_written_total"], total["jetsink_events_dead_lettered_total"])
}

func (d *demo) showDeadLetters(ctx context.Context) {
	d.info("%d events on dlq.events (stream DLQ); the first 3:", d.deadLettered)
	cons, err := d.js.OrderedConsumer(ctx, "DLQ", jetstream.OrderedConsumerConfig{})
	if err != nil {
		d.info("%v", err)
		return
	}
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		d.info("%v", err)
		return
	}
	for m := range batch.Messages() {
		var hdr []string
		for k, v := range m.Headers() {
			hdr = append(hdr, k+"="+strings.Join(v, ","))
		}
		sort.Strings(hdr)
		body := string(m.Data())
		if len(body) > 80 {
			body = body[:80] + "..."
		}
		d.info("  %q", body)
		d.info("    headers: %s", strings.Join(hdr, " "))
	}
}

// keepFiles copies the bucket's files (versitygw's posix backend stores each
// object as a plain file) to out/<bucket>.
func (d *demo) keepFiles(out string) error {
	src := filepath.Join(d.stack.S3Dir, bucket)
	dst := filepath.Join(out, bucket)
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		return err
	}
	_ = os.RemoveAll(filepath.Join(dst, ".sgwtmp")) // versitygw's staging dir
	// The logs of the pods (saved as they drained) and of the cluster's
	// host processes, too.
	_ = os.RemoveAll(filepath.Join(out, "logs"))
	if err := os.CopyFS(filepath.Join(out, "logs"), os.DirFS(d.stack.LogDir)); err != nil {
		return err
	}
	return os.RemoveAll(d.stack.Dir)
}

func (d *demo) summary() {
	var files int
	for range d.rows {
		files++
	}
	var tableFiles, snapshots int
	if d.table != nil {
		tableFiles, snapshots = len(d.table.Files), len(d.table.Snapshots)
	}
	fmt.Printf("demo: published=%d poison=%d rows=%d files=%d dead_lettered=%d table_rows=%d table_events=%d table_files=%d table_snapshots=%d\n",
		d.published, d.poisoned, d.totalRows(), files, d.deadLettered, d.tableRows(), d.tableEvents, tableFiles, snapshots)
}

// readTable reads the table's metadata and manifests again and returns
// its row count (0 before the first commit).
func (d *demo) readTable(ctx context.Context) int64 {
	t, err := icebergread.Load(ctx, d.catalog, "jetsink", tableNamespace, tableName, icebergread.S3(d.stack.S3Client()))
	switch {
	case errors.Is(err, icebergread.ErrNoTable):
	case err != nil:
		d.info("reading the table: %v", err)
	default:
		d.table = t
	}
	return d.tableRows()
}

func (d *demo) tableRows() int64 {
	if d.table == nil {
		return 0
	}
	return d.table.Rows()
}

// showTable prints the table as its own files describe it, and checks
// every published event is in it exactly once.
func (d *demo) showTable(ctx context.Context) error {
	d.readTable(ctx)
	t := d.table
	if t == nil || t.Current == nil {
		return errors.New("the table sink committed nothing")
	}
	d.info("catalog: PostgreSQL %s, table %s.%s, format v%d", d.stack.CatalogURI, tableNamespace, tableName, t.FormatVersion)
	d.info("metadata: %s", t.MetadataLocation)
	d.info("snapshots: %d, one per commit (every commitInterval, or at maxFilesPerCommit files)", len(t.Snapshots))
	show := t.Snapshots
	if len(show) > 6 {
		d.info("  … %d earlier snapshots …", len(show)-6)
		show = show[len(show)-6:]
	}
	for _, s := range show {
		d.info("  %d  %s  %-6s +%s rows in +%s files  commit %s", s.ID, time.UnixMilli(s.TimestampMS).UTC().Format(time.TimeOnly),
			s.Summary["operation"], s.Summary["added-records"], s.Summary["added-data-files"], s.Summary["jetsink.commit-id"])
	}
	for k, v := range t.Properties {
		if strings.HasPrefix(k, "jetsink.") {
			d.info("table property %s = %.100s", k, v)
		}
	}
	ids, err := t.Strings(ctx, icebergread.S3(d.stack.S3Client()), "event_id")
	if err != nil {
		return err
	}
	distinct := map[string]bool{}
	for _, id := range ids {
		distinct[id] = true
	}
	d.tableEvents = len(distinct)
	d.info("live data files: %d, rows: %d, distinct event_ids: %d, published: %d", len(t.Files), t.Rows(), len(distinct), d.published)
	if int(t.Rows()) != d.published || len(distinct) != d.published {
		return fmt.Errorf("the table holds %d rows of %d distinct events; %d were published, each must be there once", t.Rows(), len(distinct), d.published)
	}
	return nil
}

// indent prefixes the stack's progress lines.
type indent struct{ w io.Writer }

func (i indent) Write(p []byte) (int, error) {
	_, err := i.w.Write(append([]byte("   "), p...))
	return len(p), err
}

// Published events. Each app has its own event vocabulary; timestamps fall
// in the last three hours so several hourly partitions fill.
var apps = map[string][]string{
	"shop-web": {"page_view", "page_view", "page_view", "product_view", "add_to_cart", "checkout_started", "purchase"},
	"shop-ios": {"app_open", "screen_view", "screen_view", "product_view", "add_to_cart", "purchase", "push_opened"},
	"newsroom": {"page_view", "page_view", "article_read", "article_read", "newsletter_signup", "share"},
}
var appNames = []string{"shop-web", "shop-ios", "newsroom"}

// publish sends n good events with poison ones sprinkled among them, in
// waves spread over the given time.
func (d *demo) publish(ctx context.Context, rng *rand.Rand, n, poison, waves int, over time.Duration) error {
	now := time.Now().UTC()
	poisonEvery := max(1, n/max(1, poison))
	sent, sentPoison := 0, 0
	for w := range waves {
		wavePoison := 0
		m := n / waves
		if w == waves-1 {
			m = n - sent
		}
		futures := make([]jetstream.PubAckFuture, 0, m+8)
		for range m {
			app := appNames[rng.IntN(len(appNames))]
			ev := event(rng, app, now)
			body, _ := json.Marshal(ev)
			f, err := d.js.PublishAsync("events."+app+"."+ev["event"].(string), body)
			if err != nil {
				return err
			}
			futures = append(futures, f)
			sent++
			if sent%poisonEvery == 0 && sentPoison < poison {
				f, err := d.js.PublishAsync("events."+app+".unknown", poisonEvent(rng, d.poisoned+wavePoison, app))
				if err != nil {
					return err
				}
				futures = append(futures, f)
				sentPoison++
				wavePoison++
			}
		}
		select {
		case <-d.js.PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			return errors.New("publishing timed out")
		}
		for _, f := range futures {
			select {
			case err := <-f.Err():
				return fmt.Errorf("publish: %w", err)
			default:
			}
		}
		d.published += m
		d.poisoned += wavePoison
		if w < waves-1 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(over / time.Duration(waves)):
			}
		}
	}
	return nil
}

func event(rng *rand.Rand, app string, now time.Time) map[string]any {
	names := apps[app]
	name := names[rng.IntN(len(names))]
	user := rng.IntN(2000)
	ts := now.Add(-time.Duration(rng.Int64N(int64(3 * time.Hour))))
	props := map[string]any{}
	switch name {
	case "page_view", "screen_view":
		props["path"] = []string{"/", "/sale", "/shoes", "/about", "/cart"}[rng.IntN(5)]
	case "product_view", "add_to_cart":
		props["sku"] = fmt.Sprintf("SKU-%04d", rng.IntN(500))
		props["price"] = float64(rng.IntN(20000)) / 100
	case "purchase":
		props["order_id"] = fmt.Sprintf("ord_%06d", rng.IntN(1000000))
		props["revenue"] = float64(rng.IntN(50000)) / 100
		props["currency"] = "EUR"
	case "article_read":
		props["article_id"] = rng.IntN(300)
		props["read_seconds"] = rng.IntN(600)
	}
	ev := map[string]any{
		"event_id":   fmt.Sprintf("%016x", rng.Uint64()),
		"app_id":     app,
		"event":      name,
		"session_id": fmt.Sprintf("s-%d-%d", user, ts.Unix()/1800),
		"properties": props,
		"context":    map[string]any{"library": "jetsink-demo/1.0", "locale": []string{"en-GB", "de-DE", "fr-FR"}[rng.IntN(3)]},
	}
	if rng.IntN(2) == 0 {
		ev["timestamp"] = ts.Format(time.RFC3339Nano)
	} else {
		ev["timestamp"] = ts.UnixMilli()
	}
	if rng.IntN(4) == 0 {
		ev["anonymous_id"] = fmt.Sprintf("anon-%08x", rng.Uint32())
	} else {
		ev["user_id"] = fmt.Sprintf("user-%d", user)
	}
	return ev
}

// poisonEvent is one of the ways producers get events wrong.
func poisonEvent(rng *rand.Rand, i int, app string) []byte {
	switch i % 4 {
	case 0:
		return []byte(`{"app_id":"` + app + `","event":"page_view","timestamp":`) // truncated JSON
	case 1:
		return []byte(`{"event":"page_view","timestamp":"2026-01-01T00:00:00Z"}`) // no app_id
	case 2:
		return []byte(`{"app_id":"` + app + `","event":"purchase","timestamp":"yesterday"}`) // bad timestamp
	default:
		return []byte(fmt.Sprintf(`{"app_id":"%s","timestamp":%d}`, app, rng.Int64N(1<<40))) // no event name
	}
}
