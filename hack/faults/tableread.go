package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	icebergio "github.com/apache/iceberg-go/io"
	_ "github.com/apache/iceberg-go/io/gocloud/s3" // s3:// table locations
	icetable "github.com/apache/iceberg-go/table"
	_ "github.com/jackc/pgx/v5/stdlib" // the catalog's database driver

	"github.com/jetsink/jetsink/internal/testutil/s3test"
)

// tableReader reads a table case's table back as a query engine would:
// the live data files of its current snapshot, through the catalog, every
// row's event_id. Orphan files (written, never committed) do not count.
// It talks to PostgreSQL and versitygw directly, never through the proxies.
type tableReader struct {
	dsn, s3 string
	cat     *sqlcat.Catalog
}

func (r *tableReader) rows(ctx context.Context) (ids map[string]int, objects, rows int, err error) {
	if r.cat == nil {
		db, err := sql.Open("pgx", r.dsn)
		if err != nil {
			return nil, 0, 0, err
		}
		r.cat, err = sqlcat.NewCatalog("jetsink", db, sqlcat.Postgres, iceberg.Properties{
			icebergio.S3EndpointURL: r.s3, icebergio.S3Region: s3test.Region, icebergio.S3ForceVirtualAddressing: "false",
			icebergio.S3AccessKeyID: s3test.AccessKey, icebergio.S3SecretAccessKey: s3test.SecretKey,
		})
		if err != nil {
			db.Close()
			return nil, 0, 0, fmt.Errorf("catalog: %w", err)
		}
	}
	ids = map[string]int{}
	tbl, err := r.cat.LoadTable(ctx, icetable.Identifier{"faults", "events"})
	if errors.Is(err, catalog.ErrNoSuchTable) {
		return ids, 0, 0, nil
	}
	if err != nil {
		return nil, 0, 0, fmt.Errorf("load table: %w", err)
	}
	snap := tbl.CurrentSnapshot()
	if snap == nil {
		return ids, 0, 0, nil
	}
	objects, _ = strconv.Atoi(snap.Summary.Properties["total-data-files"])
	at, err := tbl.Scan(icetable.WithSelectedFields("event_id")).ToArrowTable(ctx)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("scan table: %w", err)
	}
	defer at.Release()
	for _, chunk := range at.Column(0).Data().Chunks() {
		col := chunk.(*array.String)
		for i := range col.Len() {
			ids[col.Value(i)]++
			rows++
		}
	}
	return ids, objects, rows, nil
}

func (r *tableReader) close() {
	if r.cat != nil {
		_ = r.cat.Close()
	}
}
