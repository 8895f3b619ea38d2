//go:build iceberg

package sinkworker

import (
	"context"
	"database/sql"
	"strconv"
	"testing"
	"time"

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
	e := newEnv(t)
	pg := pgtest.Start(t)
	e.cfg.Table = &config.Table{Catalog: "sql", URI: pg.DSN, Warehouse: "s3://" + testBucket + "/warehouse",
		Namespace: "analytics", Name: "events", CommitInterval: "200ms"}
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
	if tbl.CurrentSnapshot() == nil {
		t.Fatal("the table has no snapshot")
	}
	return tbl.CurrentSnapshot()
}
