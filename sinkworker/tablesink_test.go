//go:build iceberg

package sinkworker

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	icebergio "github.com/apache/iceberg-go/io"
	icetable "github.com/apache/iceberg-go/table"
	"github.com/parquet-go/parquet-go"

	"github.com/jetsink/jetsink/internal/icebergread"
	"github.com/jetsink/jetsink/internal/testutil/pgtest"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
	"github.com/jetsink/jetsink/sinkworker/config"
	"github.com/jetsink/jetsink/sinkworker/table"
)

// A sink with a table commits every event to it once; a replay of every
// event (as after lost ACKs) is recognised as committed and ACKed without
// writing a row or a file. Real NATS, versitygw and PostgreSQL.
func TestTableCommitsEachEventOnceAndRecognisesAReplay(t *testing.T) {
	e, pg := tableEnv(t)
	evs := makeEvents(600, []string{"shop", "blog", "news"}, 2)
	e.publish(evs)
	w := e.start(Backoff{})
	eventually(t, 60*time.Second, "every event committed and ACKed", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	w.stop(t)
	snap := tableSnapshot(t, e, pg.DSN)
	records, files := snap.Summary.Properties["total-records"], snap.Summary.Properties["total-data-files"]
	if records != strconv.Itoa(len(evs)) {
		t.Fatalf("table holds %s records, want %d", records, len(evs))
	}
	// The files carry no field IDs: a reader goes by the name mapping, and
	// finds every event under its own columns.
	ids := scanColumn(t, e, pg.DSN, "event_id")
	slices.Sort(ids)
	want := make([]string, len(evs))
	for i, ev := range evs {
		want[i] = ev.ID
	}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("a scan of the table reads %d event_ids, not the %d published (first %v)", len(ids), len(want), ids[:min(3, len(ids))])
	}
	// A reader that is not iceberg-go (the catalog's row, metadata.json,
	// the Avro manifests, the Parquet files) reads the same table.
	db, err := sql.Open("pgx", pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	get := icebergread.S3(e.s3.Client())
	other, err := icebergread.Load(t.Context(), db, "jetsink", "analytics", "events", get)
	if err != nil {
		t.Fatal(err)
	}
	otherIDs, err := other.Strings(t.Context(), get, "event_id")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(otherIDs)
	if !slices.Equal(otherIDs, want) || other.Rows() != int64(len(evs)) || strconv.Itoa(len(other.Files)) != files {
		t.Errorf("icebergread: %d rows in %d files, %d event_ids; want %d in %s files", other.Rows(), len(other.Files), len(otherIDs), len(evs), files)
	}
	if other.Current == nil || other.Current.Summary["jetsink.commit-id"] == "" {
		t.Errorf("icebergread: the current snapshot's summary has no jetsink.commit-id: %+v", other.Current)
	}

	// Every event again, on a new consumer of the same name: the table
	// says they are in it.
	if err := e.js.DeleteConsumer(t.Context(), testStream, e.cfg.Consumer); err != nil {
		t.Fatal(err)
	}
	w2 := e.start(Backoff{})
	eventually(t, 60*time.Second, "the replay ACKed", func() bool {
		return metric(t, w2.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	w2.stop(t)
	if got := metric(t, w2.reg, "jetsink_table_already_committed_total"); got != float64(len(evs)) {
		t.Errorf("%v events recognised as committed, want %d", got, len(evs))
	}
	snap = tableSnapshot(t, e, pg.DSN)
	if got := snap.Summary.Properties["total-records"]; got != records {
		t.Errorf("after the replay the table holds %s records, want %s", got, records)
	}
	if got := snap.Summary.Properties["total-data-files"]; got != files {
		t.Errorf("after the replay the table holds %s files, want %s", got, files)
	}
	if got := metric(t, w.reg, "jetsink_table_committed_rows_total"); got != float64(len(evs)) {
		t.Errorf("jetsink_table_committed_rows_total %v, want %d", got, len(evs))
	}
	if got := metric(t, w.reg, "jetsink_table_snapshots"); got < 1 {
		t.Errorf("jetsink_table_snapshots %v, want the table's snapshots", got)
	}
	t.Logf("%s records in %s files", records, files)
}

// tableSnapshot is the current snapshot of analytics.events.
func tableSnapshot(t *testing.T, e *env, dsn string) *icetable.Snapshot {
	t.Helper()
	tbl := loadTable(t, e, dsn)
	if tbl.CurrentSnapshot() == nil {
		t.Fatal("the table has no snapshot")
	}
	return tbl.CurrentSnapshot()
}

// scanColumn reads one string column of analytics.events with iceberg-go.
func scanColumn(t *testing.T, e *env, dsn, name string) []string {
	t.Helper()
	tbl := loadTable(t, e, dsn)
	at, err := tbl.Scan(icetable.WithSelectedFields(name)).ToArrowTable(context.Background())
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	defer at.Release()
	var out []string
	for _, chunk := range at.Column(0).Data().Chunks() {
		col := chunk.(*array.String)
		for i := range col.Len() {
			out = append(out, col.Value(i))
		}
	}
	return out
}

func loadTable(t *testing.T, e *env, dsn string) *icetable.Table {
	t.Helper()
	tbl, err := tableCatalog(t, e, dsn).LoadTable(context.Background(), icetable.Identifier{"analytics", "events"})
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// tableEnv is newEnv with a table on a real PostgreSQL.
func tableEnv(t *testing.T) (*env, *pgtest.Server) {
	e := newEnv(t)
	pg := pgtest.Start(t)
	e.cfg.Table = &config.Table{Catalog: "sql", URI: pg.DSN, Warehouse: "s3://" + testBucket + "/warehouse",
		Namespace: "analytics", Name: "events", CommitInterval: "200ms"}
	return e, pg
}

// The catalog's database stopped for longer than AckWait × MaxDeliver is
// an outage like S3's: the events wait, leased, no delivery is spent,
// nothing is dead-lettered, and everything is committed once it is back.
func TestTableCatalogOutageSpendsNoDeliveries(t *testing.T) {
	e, pg := tableEnv(t)
	e.cfg.AckWait, e.cfg.MaxDeliver = 2*time.Second, 2
	e.cfg.BatchMaxAge = 200 * time.Millisecond
	w := e.start(Backoff{Base: 100 * time.Millisecond, Max: time.Second})
	first := makeEvents(200, []string{"shop"}, 1)
	e.publish(first)
	eventually(t, 30*time.Second, "the first events committed", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(first))
	})
	pg.Stop()
	more := makeEvents(400, []string{"shop", "blog"}, 1)[200:]
	for i, ev := range more {
		e.publishRaw("events."+ev.App, ev.body(200+i))
	}
	e.waitPublished()
	time.Sleep(6 * time.Second) // 3 × AckWait: every lease renewed or lost by now
	if got := metric(t, w.reg, "jetsink_events_acked_total"); got != float64(len(first)) {
		t.Errorf("%v events ACKed while the catalog was down, want %d", got, len(first))
	}
	pg.Start()
	eventually(t, 60*time.Second, "every event committed after the outage", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(first)+len(more))
	})
	w.stop(t)
	if got := metric(t, w.reg, "jetsink_events_dead_lettered_total"); got != 0 {
		t.Errorf("%v events dead-lettered over a catalog outage", got)
	}
	if info := e.consumer(); info.NumRedelivered != 0 {
		t.Errorf("%d events redelivered: the outage spent deliveries", info.NumRedelivered)
	}
	if got := tableSnapshot(t, e, pg.DSN).Summary.Properties["total-records"]; got != "400" {
		t.Errorf("table holds %s records, want 400", got)
	}
	t.Logf("commit attempts: ok %v, unknown %v", metric(t, w.reg, "jetsink_table_commit_attempts_total", "outcome", "ok"),
		metric(t, w.reg, "jetsink_table_commit_attempts_total", "outcome", "unknown"))
}

// Two workers commit to one table at once: their conflicts are retried
// and every event is in the table once.
func TestTableTwoWorkersCommitEachEventOnce(t *testing.T) {
	e, pg := tableEnv(t)
	w1, w2 := e.start(Backoff{}), e.start(Backoff{})
	evs := makeEvents(3000, []string{"shop", "blog", "news"}, 2)
	e.publish(evs)
	eventually(t, 60*time.Second, "every event ACKed by one of them", func() bool {
		return metric(t, w1.reg, "jetsink_events_acked_total")+metric(t, w2.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	w1.stop(t)
	w2.stop(t)
	if got := tableSnapshot(t, e, pg.DSN).Summary.Properties["total-records"]; got != strconv.Itoa(len(evs)) {
		t.Errorf("table holds %s records, want %d", got, len(evs))
	}
	conflicts := metric(t, w1.reg, "jetsink_table_commit_attempts_total", "outcome", "conflict") +
		metric(t, w2.reg, "jetsink_table_commit_attempts_total", "outcome", "conflict")
	t.Logf("%v conflicts retried", conflicts)
}

// A batch holding some events the table has already (a zombie's, whose
// lease lapsed and whose events another worker committed meanwhile) is
// written again without them: they are ACKed, the rest committed once,
// in a file whose rows are the first file's, value for value (envelope and
// declared schema: the worker decodes the rows again to rewrite it).
func TestTableRewritesAFileHoldingCommittedEvents(t *testing.T) {
	t.Run("envelope", func(t *testing.T) { tableRewritesAFileHoldingCommittedEvents(t, nil) })
	t.Run("declared", func(t *testing.T) { tableRewritesAFileHoldingCommittedEvents(t, benchSchema()) })
}

func tableRewritesAFileHoldingCommittedEvents(t *testing.T, schema *config.Schema) {
	e, pg := tableEnv(t)
	e.cfg.Schema = schema
	e.cfg.BatchMaxAge = time.Hour // one batch, cut at shutdown
	e.cfg.AckWait = 2 * time.Hour
	evs := makeEvents(20, []string{"shop"}, 1)
	for i, ev := range evs {
		// Even bodies: their timestamps are RFC 3339, which benchSchema reads.
		e.publishRaw("events."+ev.App, ev.body(2*i))
	}
	e.waitPublished()

	// Events 5..10 are in the table already, committed by "another
	// worker": the table is made as the worker makes it, then a file
	// holding them committed under the sink's committed set.
	ctx := t.Context()
	st, err := e.js.Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	cat := tableCatalog(t, e, pg.DSN)
	ident := icetable.Identifier{"analytics", "events"}
	tbl, err := table.Ensure(ctx, cat, ident, schema, config.GranularityHour)
	if err != nil {
		t.Fatal(err)
	}
	spec := tbl.Spec()
	hour := int32(evs[0].TS.Unix() / 3600)
	c := &table.Committer{Catalog: cat, Ident: ident, Sink: e.cfg.Consumer, Stream: streamIncarnation(testStream, st.CachedInfo().Created)}
	other := table.File{Path: tbl.Location() + "/data/other.parquet", Size: 100, Rows: 6,
		Partition: map[int]any{spec.Field(0).FieldID: "shop", spec.Field(1).FieldID: hour}, Seqs: []uint64{5, 6, 7, 8, 9, 10}}
	if out, err := c.Commit(ctx, []table.File{other}, 0); err != nil || len(out.Committed) != 1 {
		t.Fatalf("the other worker's commit: %+v, %v", out, err)
	}

	w := e.start(Backoff{})
	eventually(t, 30*time.Second, "every event read", func() bool {
		return metric(t, w.reg, "jetsink_events_received_total") == float64(len(evs))
	})
	w.stop(t) // cuts the one batch: committed at shutdown
	if got := metric(t, w.reg, "jetsink_events_acked_total"); got != float64(len(evs)) {
		t.Errorf("%v events ACKed, want all %d", got, len(evs))
	}
	if got := metric(t, w.reg, "jetsink_table_already_committed_total"); got != 6 {
		t.Errorf("%v events recognised as committed, want 6", got)
	}
	snap := tableSnapshot(t, e, pg.DSN)
	if got := snap.Summary.Properties["total-records"]; got != "20" {
		t.Errorf("table holds %s records, want 20 (6 from the other worker, 14 rewritten)", got)
	}
	if got := snap.Summary.Properties["total-data-files"]; got != "2" {
		t.Errorf("table holds %s files, want 2", got)
	}

	// The rewritten file holds the 14 others as the first file held them:
	// the worker dropped its decoded events while the file waited for its
	// commit, and decoded them again from their messages to rewrite it.
	db, err := sql.Open("pgx", pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	get := icebergread.S3(e.s3.Client())
	read, err := icebergread.Load(ctx, db, "jetsink", "analytics", "events", get)
	if err != nil {
		t.Fatal(err)
	}
	// A file's rows as values (every column), and its _stream_seq column.
	rowsOf := func(uri string) ([]parquet.Row, int) {
		body, err := get(ctx, uri)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parquet.OpenFile(bytes.NewReader(body), int64(len(body)))
		if err != nil {
			t.Fatalf("open %s: %v", uri, err)
		}
		seq, ok := f.Schema().Lookup("_stream_seq")
		if !ok {
			t.Fatalf("%s has no _stream_seq column", uri)
		}
		rows := make([]parquet.Row, f.NumRows())
		if n, err := parquet.NewReader(f).ReadRows(rows); n != len(rows) || (err != nil && !errors.Is(err, io.EOF)) {
			t.Fatalf("read %s: %d of %d rows: %v", uri, n, len(rows), err)
		}
		return rows, seq.ColumnIndex
	}
	var first, rewritten []parquet.Row
	seqCol := -1
	for _, key := range e.s3.List(t, e.cfg.Bucket, strings.TrimPrefix(tbl.Location(), "s3://"+e.cfg.Bucket+"/")+"/data/") {
		uri := "s3://" + e.cfg.Bucket + "/" + key
		committed := slices.ContainsFunc(read.Files, func(f icebergread.DataFile) bool { return f.Path == uri })
		switch rows, col := rowsOf(uri); {
		case committed && len(rows) == 14:
			rewritten = rows
		case !committed && len(rows) == len(evs):
			first, seqCol = rows, col // the file as first written, never committed
		}
	}
	if first == nil || rewritten == nil {
		t.Fatalf("want the first file of %d rows and a rewritten one of 14 committed; files %+v", len(evs), read.Files)
	}
	var want []parquet.Row
	for _, r := range first {
		var seq int64
		for _, v := range r {
			if v.Column() == seqCol {
				seq = v.Int64()
			}
		}
		if seq < 5 || seq > 10 {
			want = append(want, r)
		}
	}
	if !slices.EqualFunc(rewritten, want, parquet.Row.Equal) {
		t.Errorf("the rewritten file's rows differ from the first file's:\n got %v\nwant %v", rewritten, want)
	}
}

// tableCatalog is the worker's SQL catalog as the test sees it: the same
// database, and this env's S3 without the fault proxy.
func tableCatalog(t *testing.T, e *env, dsn string) *sqlcat.Catalog {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cat, err := sqlcat.NewCatalog("jetsink", db, sqlcat.Postgres, iceberg.Properties{
		"warehouse":             e.cfg.Table.Warehouse,
		icebergio.S3EndpointURL: e.s3.URL, icebergio.S3Region: s3test.Region, icebergio.S3ForceVirtualAddressing: "false",
		icebergio.S3AccessKeyID: s3test.AccessKey, icebergio.S3SecretAccessKey: s3test.SecretKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

// Files wait for company only while company is on its way: a backlog's
// last files are committed as soon as they are written, not a commit
// interval later, and a steady backlog commits many files at once.
func TestTableCommitsAtOnceWhenNothingElseIsComing(t *testing.T) {
	e, _ := tableEnv(t)
	e.cfg.Table.CommitInterval = "1h"
	e.cfg.BatchMaxEvents = 100
	evs := makeEvents(3000, []string{"shop", "blog", "news"}, 2)
	e.publish(evs)
	w := e.start(Backoff{})
	eventually(t, 30*time.Second, "every event committed and ACKed well within the hour's interval", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	w.stop(t)
	files, commits := metric(t, w.reg, "jetsink_files_written_total"), metric(t, w.reg, "jetsink_table_commit_attempts_total", "outcome", "ok")
	t.Logf("%v files in %v commits", files, commits)
	if commits == 0 || commits*3 > files {
		t.Errorf("%v files in %v commits: want several files per commit while the backlog lasts", files, commits)
	}
}

// A table sink whose S3 serves a certificate from a private CA
// (destination.tls) commits every event: iceberg-go writes the table's
// metadata with the worker's own S3 client, which trusts that CA. The
// client iceberg-go built for itself, from the AWS SDK's default chain,
// did not.
func TestTableOverS3WithAPrivateCA(t *testing.T) {
	e, pg := tableEnv(t)
	s3s, ca := s3test.StartTLS(t)
	s3s.CreateBucket(t, testBucket)
	s3s.SetEnv(t)
	e.s3 = s3s
	e.cfg.Endpoint = s3s.URL
	e.cfg.FromSecret(config.S3TLSSecretEnv, map[string][]byte{"ca.crt": ca})
	evs := makeEvents(300, []string{"shop", "blog"}, 2)
	e.publish(evs)
	w := e.start(Backoff{})
	eventually(t, 60*time.Second, "every event committed and ACKed", func() bool {
		return metric(t, w.reg, "jetsink_events_acked_total") == float64(len(evs))
	})
	w.stop(t)
	db, err := sql.Open("pgx", pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tbl, err := icebergread.Load(t.Context(), db, "jetsink", "analytics", "events", icebergread.S3(s3s.Client()))
	if err != nil {
		t.Fatal(err)
	}
	if tbl.Rows() != int64(len(evs)) {
		t.Errorf("the table holds %d rows, want %d", tbl.Rows(), len(evs))
	}
}
