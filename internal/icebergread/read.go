// Package icebergread reads an Iceberg table the way a query engine that is
// not iceberg-go does, so that tests and the demo check what the worker
// committed with a reader that shares none of the writer's code:
//
//	SQL catalog row (iceberg_tables) ──> metadata.json (snapshots, current)
//	  ──> manifest list (Avro) ──> manifests (Avro): live data file entries
//	  ──> Parquet data files (parquet-go): a column's values
//
// It reads format v1 and v2 tables with data files only (no delete files:
// the sink never writes them) and refuses anything else rather than guess.
package icebergread

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hamba/avro/v2/ocf"
	"github.com/parquet-go/parquet-go"
)

// Get fetches an object of the table (metadata, manifests, data files) by
// its URI, e.g. s3://lake/warehouse/analytics.db/events/metadata/….
type Get func(ctx context.Context, uri string) ([]byte, error)

// Table is a table's current state as its files say.
type Table struct {
	MetadataLocation string
	Location         string
	FormatVersion    int
	// Properties are the table's properties.
	Properties map[string]string
	// Snapshots, oldest first; Current is the last committed one (nil for
	// a table without data).
	Snapshots []Snapshot
	Current   *Snapshot
	// Files are the live data files of the current snapshot.
	Files []DataFile
}

// Snapshot is one commit.
type Snapshot struct {
	ID          int64
	TimestampMS int64
	Summary     map[string]string
}

// DataFile is a live data file as its manifest entry describes it.
type DataFile struct {
	Path    string
	Records int64
	Size    int64
}

// Rows is the number of rows in the live data files, per their manifests.
func (t *Table) Rows() int64 {
	var n int64
	for _, f := range t.Files {
		n += f.Records
	}
	return n
}

// ErrNoTable is a catalog without the table.
var ErrNoTable = errors.New("icebergread: no such table")

// Load reads the table namespace.name of the SQL catalog named catalog
// (the JDBC catalog's iceberg_tables, as Spark, Trino and iceberg-go keep
// it) from db, and its metadata and manifests through get.
func Load(ctx context.Context, db *sql.DB, catalog, namespace, name string, get Get) (*Table, error) {
	var loc string
	err := db.QueryRowContext(ctx, `SELECT metadata_location FROM iceberg_tables
		WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3`, catalog, namespace, name).Scan(&loc)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNoTable
	}
	if err != nil {
		return nil, fmt.Errorf("icebergread: catalog: %w", err)
	}
	body, err := get(ctx, loc)
	if err != nil {
		return nil, fmt.Errorf("icebergread: metadata %s: %w", loc, err)
	}
	var md struct {
		FormatVersion     int               `json:"format-version"`
		Location          string            `json:"location"`
		Properties        map[string]string `json:"properties"`
		CurrentSnapshotID *json.Number      `json:"current-snapshot-id"`
		Snapshots         []struct {
			ID           json.Number       `json:"snapshot-id"`
			TimestampMS  int64             `json:"timestamp-ms"`
			ManifestList string            `json:"manifest-list"`
			Summary      map[string]string `json:"summary"`
		} `json:"snapshots"`
	}
	// Snapshot IDs are 64-bit: as float64 they would lose digits.
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&md); err != nil {
		return nil, fmt.Errorf("icebergread: metadata %s: %w", loc, err)
	}
	if md.FormatVersion != 1 && md.FormatVersion != 2 {
		return nil, fmt.Errorf("icebergread: format version %d is not read here", md.FormatVersion)
	}
	t := &Table{MetadataLocation: loc, Location: md.Location, FormatVersion: md.FormatVersion, Properties: md.Properties}
	var manifestList string
	for _, s := range md.Snapshots {
		id, err := s.ID.Int64()
		if err != nil {
			return nil, fmt.Errorf("icebergread: snapshot id %s: %w", s.ID, err)
		}
		t.Snapshots = append(t.Snapshots, Snapshot{ID: id, TimestampMS: s.TimestampMS, Summary: s.Summary})
		if md.CurrentSnapshotID != nil && s.ID == *md.CurrentSnapshotID {
			manifestList = s.ManifestList
		}
	}
	slices.SortFunc(t.Snapshots, func(a, b Snapshot) int { return int(a.TimestampMS - b.TimestampMS) })
	if md.CurrentSnapshotID == nil || *md.CurrentSnapshotID == "-1" {
		return t, nil
	}
	for i := range t.Snapshots {
		if id, _ := md.CurrentSnapshotID.Int64(); t.Snapshots[i].ID == id {
			t.Current = &t.Snapshots[i]
		}
	}
	if t.Current == nil || manifestList == "" {
		return nil, fmt.Errorf("icebergread: current snapshot %s is not among the snapshots", *md.CurrentSnapshotID)
	}
	manifests, err := readAvro(ctx, get, manifestList)
	if err != nil {
		return nil, err
	}
	for _, m := range manifests {
		if content, _ := m["content"].(int); content != 0 {
			return nil, fmt.Errorf("icebergread: %v is a delete manifest, not read here", m["manifest_path"])
		}
		path, _ := m["manifest_path"].(string)
		entries, err := readAvro(ctx, get, path)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			// 0 EXISTING, 1 ADDED, 2 DELETED: deleted entries are history.
			if status, _ := e["status"].(int); status == 2 {
				continue
			}
			df, _ := e["data_file"].(map[string]any)
			if content, _ := df["content"].(int); content != 0 {
				return nil, fmt.Errorf("icebergread: %v is a delete file, not read here", df["file_path"])
			}
			f := DataFile{}
			f.Path, _ = df["file_path"].(string)
			f.Records, _ = df["record_count"].(int64)
			f.Size, _ = df["file_size_in_bytes"].(int64)
			if f.Path == "" {
				return nil, fmt.Errorf("icebergread: manifest %s has an entry without file_path", path)
			}
			t.Files = append(t.Files, f)
		}
	}
	return t, nil
}

// readAvro decodes every record of an Avro object container file.
func readAvro(ctx context.Context, get Get, uri string) ([]map[string]any, error) {
	body, err := get(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("icebergread: %s: %w", uri, err)
	}
	dec, err := ocf.NewDecoder(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("icebergread: %s: %w", uri, err)
	}
	var out []map[string]any
	for dec.HasNext() {
		var rec map[string]any
		if err := dec.Decode(&rec); err != nil {
			return nil, fmt.Errorf("icebergread: %s: %w", uri, err)
		}
		out = append(out, rec)
	}
	if err := dec.Error(); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("icebergread: %s: %w", uri, err)
	}
	return out, nil
}

// Strings reads the string column named column from every live data file,
// by name (the sink's files carry no field IDs).
func (t *Table) Strings(ctx context.Context, get Get, column string) ([]string, error) {
	var out []string
	for _, df := range t.Files {
		body, err := get(ctx, df.Path)
		if err != nil {
			return nil, fmt.Errorf("icebergread: %s: %w", df.Path, err)
		}
		f, err := parquet.OpenFile(bytes.NewReader(body), int64(len(body)))
		if err != nil {
			return nil, fmt.Errorf("icebergread: %s: %w", df.Path, err)
		}
		leaf, ok := f.Schema().Lookup(column)
		if !ok {
			return nil, fmt.Errorf("icebergread: %s has no column %s", df.Path, column)
		}
		n := 0
		for _, rg := range f.RowGroups() {
			pages := rg.ColumnChunks()[leaf.ColumnIndex].Pages()
			for {
				p, err := pages.ReadPage()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					pages.Close()
					return nil, fmt.Errorf("icebergread: %s: %w", df.Path, err)
				}
				vals := make([]parquet.Value, p.NumValues())
				k, _ := p.Values().ReadValues(vals)
				for _, v := range vals[:k] {
					out = append(out, v.String())
				}
				n += k
			}
			pages.Close()
		}
		if int64(n) != df.Records {
			return nil, fmt.Errorf("icebergread: %s holds %d values of %s, its manifest says %d rows", df.Path, n, column, df.Records)
		}
	}
	return out, nil
}

// S3 gets s3://bucket/key URIs with client.
func S3(client *s3.Client) Get {
	return func(ctx context.Context, uri string) ([]byte, error) {
		rest, ok := strings.CutPrefix(uri, "s3://")
		bucket, key, ok2 := strings.Cut(rest, "/")
		if !ok || !ok2 {
			return nil, fmt.Errorf("not an s3://bucket/key URI: %q", uri)
		}
		out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
		if err != nil {
			return nil, err
		}
		defer out.Body.Close()
		return io.ReadAll(out.Body)
	}
}
