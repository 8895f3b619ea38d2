package config

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Schema declares the columns a sink writes and where each comes from in an
// event. A nil *Schema is the analytics envelope (event_id, app_id, event,
// timestamp, …, partitioned by app_id), written by the worker's specialised
// path exactly as before schemas existed.
//
// It travels to the worker as JSON in JETSINK_SCHEMA, so its JSON names are
// part of the contract; the operator renders it from spec.schema, whose
// fields have the same names.
type Schema struct {
	// Columns in file order. The provenance columns _subject, _stream_seq
	// and _received_at follow them in every file.
	Columns []Column `json:"columns"`
	// Time names the timestamp column whose value is the event time: it
	// drives the date=/hour= partition and the EVENT_TIME_MIN window.
	Time string `json:"time"`
	// PartitionBy names the columns, in order, whose values make the Hive
	// path before date=: tenant=acme/region=eu/date=…
	PartitionBy []string `json:"partitionBy,omitempty"`
	// Unmapped says what happens to an event's top-level fields that no
	// column's path starts with.
	Unmapped Unmapped `json:"unmapped,omitzero"`
}

// Column is one declared column.
type Column struct {
	Name string `json:"name"`
	// Path is where the value is in the event: object keys separated by
	// dots (device, tags.site). Empty means the column's name.
	Path string `json:"path,omitempty"`
	Type string `json:"type"`
	// Format is how a timestamp column's input is written (TimestampFormats);
	// empty means rfc3339. Only timestamp columns take one.
	Format string `json:"format,omitempty"`
	// Required makes an event without the value (absent or null) poison.
	// The time column and the partitionBy columns are always required.
	Required bool `json:"required,omitempty"`
}

// Unmapped is what happens to fields no column names.
type Unmapped struct {
	// Action is drop (the default) or keep.
	Action string `json:"action,omitempty"`
	// Column names the JSON column that keeps them, with keep.
	Column string `json:"column,omitempty"`
}

// Column types.
const (
	TypeString    = "string"
	TypeInt64     = "int64"
	TypeDouble    = "double"
	TypeBoolean   = "boolean"
	TypeTimestamp = "timestamp"
	TypeDate      = "date"
	TypeJSON      = "json"
)

// ColumnTypes lists every column type.
var ColumnTypes = []string{TypeString, TypeInt64, TypeDouble, TypeBoolean, TypeTimestamp, TypeDate, TypeJSON}

// PartitionTypes are the types a partitionBy column may have: values with
// one exact text form.
var PartitionTypes = []string{TypeString, TypeInt64, TypeBoolean, TypeDate}

// Timestamp input formats.
const (
	FormatRFC3339      = "rfc3339"
	FormatEpochSeconds = "epochSeconds"
	FormatEpochMillis  = "epochMillis"
	FormatEpochMicros  = "epochMicros"
)

// TimestampFormats lists every timestamp input format.
var TimestampFormats = []string{FormatRFC3339, FormatEpochSeconds, FormatEpochMillis, FormatEpochMicros}

// Unmapped actions.
const (
	UnmappedDrop = "drop"
	UnmappedKeep = "keep"
)

// Limits of a schema, mirrored by the CRD.
const (
	MaxColumns     = 64
	MaxPartitionBy = 8
	MaxNameLength  = 64
	MaxPathLength  = 256
)

// ColumnNamePattern is what a column name must match: lower-case, so that
// engines that fold names (Athena, Hive, Spark) and those that do not
// (DuckDB, Trino with quoting) see the same column.
const ColumnNamePattern = `^[a-z_][a-z0-9_]*$`

var columnName = regexp.MustCompile(ColumnNamePattern)

// ReservedColumns are names a declared column may not take: the provenance
// columns every file carries, and the time partition's directories, which
// engines reading Hive partitions would confuse with a column.
var ReservedColumns = []string{"_subject", "_stream_seq", "_received_at", "date", "hour"}

// ColumnPath is the column's path, its name when none is given.
func (c Column) ColumnPath() string {
	if c.Path == "" {
		return c.Name
	}
	return c.Path
}

// TimestampFormat is the column's input format, rfc3339 when none is given.
func (c Column) TimestampFormat() string {
	if c.Format == "" {
		return FormatRFC3339
	}
	return c.Format
}

// Column returns the named column.
func (s *Schema) Column(name string) (Column, bool) {
	i := slices.IndexFunc(s.Columns, func(c Column) bool { return c.Name == name })
	if i < 0 {
		return Column{}, false
	}
	return s.Columns[i], true
}

// validate reports what is wrong with the schema, each problem naming the
// field as spec.schema does, through bad.
func (s *Schema) validate(bad func(name, format string, args ...any)) {
	const v = "SCHEMA"
	if len(s.Columns) == 0 || len(s.Columns) > MaxColumns {
		bad(v, "columns: between 1 and %d columns are required", MaxColumns)
	}
	seen := map[string]bool{}
	paths := map[string]string{} // path → column
	for i, c := range s.Columns {
		at := fmt.Sprintf("columns[%d]", i)
		switch {
		case len(c.Name) > MaxNameLength || !columnName.MatchString(c.Name):
			bad(v, "%s.name: %q must match %s and be at most %d characters", at, c.Name, ColumnNamePattern, MaxNameLength)
		case slices.Contains(ReservedColumns, c.Name):
			bad(v, "%s.name: %q is reserved (%s)", at, c.Name, strings.Join(ReservedColumns, ", "))
		case seen[c.Name]:
			bad(v, "%s.name: %q is declared twice", at, c.Name)
		}
		seen[c.Name] = true
		if !slices.Contains(ColumnTypes, c.Type) {
			bad(v, "%s.type: %q is not one of %s", at, c.Type, strings.Join(ColumnTypes, ", "))
		}
		if c.Format != "" && c.Type != TypeTimestamp {
			bad(v, "%s.format: only a timestamp column takes a format", at)
		} else if !slices.Contains(TimestampFormats, c.TimestampFormat()) {
			bad(v, "%s.format: %q is not one of %s", at, c.Format, strings.Join(TimestampFormats, ", "))
		}
		p := c.ColumnPath()
		if len(p) > MaxPathLength || slices.Contains(strings.Split(p, "."), "") {
			bad(v, "%s.path: %q must be object keys separated by single dots, at most %d characters", at, p, MaxPathLength)
			continue
		}
		if other, ok := paths[p]; ok {
			bad(v, "%s.path: %q is also the path of column %q", at, p, other)
		}
		paths[p] = c.Name
	}
	// A path inside another column's path reads from that column's value,
	// which is then an object: only a json column can hold one.
	for _, c := range s.Columns {
		for _, o := range s.Columns {
			if p, q := c.ColumnPath(), o.ColumnPath(); strings.HasPrefix(p, q+".") && o.Type != TypeJSON {
				bad(v, "columns: the path %q of column %q is inside the path %q of column %q, which is a %s: only a json column can hold an object",
					p, c.Name, q, o.Name, o.Type)
			}
		}
	}
	if c, ok := s.Column(s.Time); !ok {
		bad(v, "time: %q must name a declared timestamp column", s.Time)
	} else if c.Type != TypeTimestamp {
		bad(v, "time: column %q is a %s, not a timestamp", s.Time, c.Type)
	}
	if len(s.PartitionBy) > MaxPartitionBy {
		bad(v, "partitionBy: at most %d columns", MaxPartitionBy)
	}
	for i, name := range s.PartitionBy {
		c, ok := s.Column(name)
		switch {
		case !ok:
			bad(v, "partitionBy[%d]: %q is not a declared column", i, name)
		case !slices.Contains(PartitionTypes, c.Type):
			bad(v, "partitionBy[%d]: column %q is a %s; partition columns are %s", i, name, c.Type, strings.Join(PartitionTypes, ", "))
		case slices.Index(s.PartitionBy, name) != i:
			bad(v, "partitionBy[%d]: %q is listed twice", i, name)
		}
	}
	switch s.Unmapped.Action {
	case "", UnmappedDrop:
		if s.Unmapped.Column != "" {
			bad(v, "unmapped.column: only with action keep")
		}
	case UnmappedKeep:
		switch c := s.Unmapped.Column; {
		case len(c) > MaxNameLength || !columnName.MatchString(c):
			bad(v, "unmapped.column: %q must match %s and be at most %d characters", c, ColumnNamePattern, MaxNameLength)
		case slices.Contains(ReservedColumns, c) || seen[c]:
			bad(v, "unmapped.column: %q is already a column or reserved", c)
		}
	default:
		bad(v, "unmapped.action: %q is not one of drop, keep", s.Unmapped.Action)
	}
}

// Required reports whether column c may not be absent: declared required,
// or the time column, or a partition column.
func (s *Schema) Required(c Column) bool {
	return c.Required || c.Name == s.Time || slices.Contains(s.PartitionBy, c.Name)
}

// render is the schema as JETSINK_SCHEMA holds it.
func (s *Schema) render() string {
	text, err := json.Marshal(s)
	if err != nil {
		panic("config: " + err.Error()) // strings and bools cannot fail to marshal
	}
	return string(text)
}

// parseSchema reads JETSINK_SCHEMA. Unknown fields are refused, so a worker
// older than its operator says so instead of ignoring a setting.
func parseSchema(text string) (*Schema, error) {
	d := json.NewDecoder(strings.NewReader(text))
	d.DisallowUnknownFields()
	s := new(Schema)
	if err := d.Decode(s); err != nil {
		return nil, fmt.Errorf("not a schema: %w", err)
	}
	return s, nil
}
