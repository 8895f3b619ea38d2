//go:build iceberg

package sinkworker

import (
	"context"
	"database/sql"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	icebergio "github.com/apache/iceberg-go/io"
	icetable "github.com/apache/iceberg-go/table"

	"github.com/jetsink/jetsink/internal/testutil/pgtest"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
	"github.com/jetsink/jetsink/sinkworker/config"
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
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cat, err := sqlcat.NewCatalog("jetsink", db, sqlcat.Postgres, iceberg.Properties{
		icebergio.S3EndpointURL: e.s3.URL, icebergio.S3Region: s3test.Region, icebergio.S3ForceVirtualAddressing: "false",
		icebergio.S3AccessKeyID: s3test.AccessKey, icebergio.S3SecretAccessKey: s3test.SecretKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := cat.LoadTable(context.Background(), icetable.Identifier{"analytics", "events"})
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
