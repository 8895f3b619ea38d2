package table

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	icebergio "github.com/apache/iceberg-go/io"
	_ "github.com/apache/iceberg-go/io/gocloud/s3" // s3:// warehouses
	"github.com/apache/iceberg-go/table"
	_ "github.com/jackc/pgx/v5/stdlib" // the pgx database/sql driver

	"github.com/jetsink/jetsink/internal/testutil/pgtest"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// testCatalog is a SQL catalog on a real PostgreSQL with its warehouse on
// a real S3 (versitygw).
func testCatalog(t *testing.T) catalog.Catalog {
	t.Helper()
	pg := pgtest.Start(t)
	s3 := s3test.Start(t)
	s3.CreateBucket(t, "lake")
	db, err := sql.Open("pgx", pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cat, err := sqlcat.NewCatalog("jetsink", db, sqlcat.Postgres, iceberg.Properties{
		"warehouse":                        "s3://lake/warehouse",
		icebergio.S3EndpointURL:            s3.URL,
		icebergio.S3Region:                 s3test.Region,
		icebergio.S3AccessKeyID:            s3test.AccessKey,
		icebergio.S3SecretAccessKey:        s3test.SecretKey,
		icebergio.S3ForceVirtualAddressing: "false",
	})
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func iotSchema() *config.Schema {
	return &config.Schema{
		Columns: []config.Column{
			{Name: "device", Type: config.TypeString},
			{Name: "ts", Type: config.TypeTimestamp, Format: config.FormatEpochMillis},
			{Name: "temp", Type: config.TypeDouble, Required: true},
			{Name: "day", Type: config.TypeDate},
		},
		Time:        "ts",
		PartitionBy: []string{"device"},
	}
}

// The table is created as the sink's files are: the columns in file order
// with their types, the partition spec of the object keys, and a name
// mapping; created once, then only evolved.
func TestEnsureCreatesTheTableOfTheSinksFiles(t *testing.T) {
	ctx := context.Background()
	cat := testCatalog(t)
	ident := table.Identifier{"iot", "readings"}
	tbl, err := Ensure(ctx, cat, ident, iotSchema(), config.GranularityHour)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range tbl.Schema().Fields() {
		got = append(got, f.Name+":"+f.Type.String()+map[bool]string{true: "!", false: ""}[f.Required])
	}
	if want := "device:string!,ts:timestamptz!,temp:double!,day:date,_subject:string!,_stream_seq:long!,_received_at:timestamptz!"; strings.Join(got, ",") != want {
		t.Errorf("schema %s, want %s", strings.Join(got, ","), want)
	}
	var parts []string
	spec := tbl.Spec()
	for _, f := range spec.Fields() {
		parts = append(parts, f.Name+":"+f.Transform.String())
	}
	if want := "device:identity,ts_hour:hour"; strings.Join(parts, ",") != want {
		t.Errorf("partition spec %s, want %s", strings.Join(parts, ","), want)
	}
	if m := tbl.Properties()[table.DefaultNameMappingKey]; !strings.Contains(m, `"temp"`) {
		t.Errorf("name mapping %q", m)
	}

	again, err := Ensure(ctx, cat, ident, iotSchema(), config.GranularityHour)
	if err != nil {
		t.Fatal(err)
	}
	if again.MetadataLocation() != tbl.MetadataLocation() {
		t.Errorf("a second Ensure committed new metadata: %s, was %s", again.MetadataLocation(), tbl.MetadataLocation())
	}

	// spec.schema gains a column: the table gains it, optional (its older
	// files have none), and the name mapping follows.
	s := iotSchema()
	s.Columns = append(s.Columns, config.Column{Name: "site", Path: "tags.site", Type: config.TypeString, Required: true})
	evolved, err := Ensure(ctx, cat, ident, s, config.GranularityHour)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := evolved.Schema().FindFieldByName("site")
	if !ok || f.Required || !f.Type.Equals(iceberg.PrimitiveTypes.String) {
		t.Errorf("site after evolving: %+v, %v", f, ok)
	}
	if m := evolved.Properties()[table.DefaultNameMappingKey]; !strings.Contains(m, `"site"`) {
		t.Errorf("name mapping not updated: %q", m)
	}

	// A column changed to another type cannot be written into this table.
	s.Columns[2].Type = config.TypeString
	_, err = Ensure(ctx, cat, ident, s, config.GranularityHour)
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "column temp is double in the table, string in the sink's files") {
		t.Errorf("Ensure after a type change = %v, want ErrIncompatible naming temp", err)
	}
}

// The envelope's table has sinkworker.Row's columns, by app_id and hour.
func TestEnsureCreatesTheEnvelopesTable(t *testing.T) {
	tbl, err := Ensure(context.Background(), testCatalog(t), table.Identifier{"analytics", "events"}, nil, config.GranularityDay)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range tbl.Schema().Fields() {
		names = append(names, f.Name)
	}
	if want := "event_id,app_id,event,timestamp,user_id,anonymous_id,session_id,properties,context,_subject,_stream_seq,_received_at"; strings.Join(names, ",") != want {
		t.Errorf("columns %s", strings.Join(names, ","))
	}
	var parts []string
	spec := tbl.Spec()
	for _, f := range spec.Fields() {
		parts = append(parts, f.Name)
	}
	if strings.Join(parts, ",") != "app_id,timestamp_day" {
		t.Errorf("partitions %v", parts)
	}
}
