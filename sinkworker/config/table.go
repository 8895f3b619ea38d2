package config

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Table makes a sink commit its files to an Apache Iceberg table, each
// event exactly once (docs/iceberg-exactly-once.md), instead of leaving
// them as plain Parquet under Prefix. It travels as JSON in JETSINK_TABLE.
// The operator renders it from spec.destination.table; only the SQL
// catalog on PostgreSQL is supported.
type Table struct {
	// Catalog is the catalog type: sql.
	Catalog string `json:"catalog"`
	// URI is the catalog's database, postgres://user@host:5432/db; a
	// password comes from PGPASSWORD, never from the URI.
	URI string `json:"uri"`
	// Warehouse is where the catalog puts a new table: s3://<S3_BUCKET>/path.
	Warehouse string `json:"warehouse"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// CommitInterval is how long written files wait for more to commit
	// with (default 5s); MaxFilesPerCommit cuts it short (default 100).
	CommitInterval    string `json:"commitInterval,omitempty"`
	MaxFilesPerCommit int    `json:"maxFilesPerCommit,omitempty"`
}

// CatalogSecretEnv lists the keys read from
// destination.table.catalog.credentialsSecretRef: the SQL catalog's
// PostgreSQL password, as libpq and pgx read it.
var CatalogSecretEnv = []SecretEnv{
	{Env: "PGPASSWORD", Key: "password"},
}

// FaultHoldFirstCommitEnv, set to a duration, makes a table worker wait
// that long after its first successful commit before ACKing its events: a
// test hook for the fault matrix (case 10e), which SIGKILLs the worker in
// that window. The operator never sets it, and spec.env cannot (JETSINK_
// names are refused there).
const FaultHoldFirstCommitEnv = EnvPrefix + "FAULT_HOLD_FIRST_COMMIT"

// Interval is CommitInterval, 5s when unset.
func (t *Table) Interval() time.Duration {
	d, err := time.ParseDuration(t.CommitInterval)
	if err != nil || d <= 0 {
		return 5 * time.Second
	}
	return d
}

// MaxFiles is MaxFilesPerCommit, 100 when unset.
func (t *Table) MaxFiles() int {
	if t.MaxFilesPerCommit <= 0 {
		return 100
	}
	return t.MaxFilesPerCommit
}

func (t *Table) validate(bucket string, bad func(name, format string, args ...any)) {
	const v = "TABLE"
	if t.Catalog != "sql" {
		bad(v, "catalog: %q is not supported by this worker (sql)", t.Catalog)
	}
	switch u, err := url.Parse(t.URI); {
	case err != nil || u.Scheme != "postgres" && u.Scheme != "postgresql" || u.Host == "":
		bad(v, "uri: must be a postgres://host/database URL")
	case u.User != nil && func() bool { _, ok := u.User.Password(); return ok }():
		bad(v, "uri: must not hold a password (PGPASSWORD, from a Secret, gives it)")
	}
	if !strings.HasPrefix(t.Warehouse, "s3://"+bucket+"/") {
		bad(v, "warehouse: %q must be under s3://%s/ (S3_BUCKET): the worker writes the data files", t.Warehouse, bucket)
	}
	if t.Namespace == "" || t.Name == "" {
		bad(v, "namespace and name are required")
	}
	if t.CommitInterval != "" {
		if d, err := time.ParseDuration(t.CommitInterval); err != nil || d <= 0 {
			bad(v, "commitInterval: %q is not a positive duration", t.CommitInterval)
		}
	}
}

func (t *Table) render() string {
	text, err := json.Marshal(t)
	if err != nil {
		panic("config: " + err.Error())
	}
	return string(text)
}

func parseTable(text string) (*Table, error) {
	d := json.NewDecoder(strings.NewReader(text))
	d.DisallowUnknownFields()
	t := new(Table)
	if err := d.Decode(t); err != nil {
		return nil, fmt.Errorf("not a table: %w", err)
	}
	return t, nil
}
