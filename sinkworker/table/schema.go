package table

import (
	"fmt"

	"github.com/apache/iceberg-go"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// column is one column of the sink's files, in file order, as the table
// declares it.
type column struct {
	name     string
	typ      iceberg.Type
	required bool
}

// fileColumns are the columns the worker writes for s (nil: the analytics
// envelope), in file order: what the table's schema must hold.
func fileColumns(s *config.Schema) []column {
	str, ts := iceberg.PrimitiveTypes.String, iceberg.PrimitiveTypes.TimestampTz
	var cols []column
	if s == nil {
		// sinkworker.Row, field by field.
		cols = []column{
			{"event_id", str, false}, {"app_id", str, true}, {"event", str, true}, {"timestamp", ts, true},
			{"user_id", str, false}, {"anonymous_id", str, false}, {"session_id", str, false},
			{"properties", str, false}, {"context", str, false},
		}
	} else {
		for _, c := range s.Columns {
			cols = append(cols, column{c.Name, icebergType(c.Type), s.Required(c)})
		}
		if s.Unmapped.Action == config.UnmappedKeep {
			cols = append(cols, column{s.Unmapped.Column, str, false})
		}
	}
	return append(cols, column{"_subject", str, true}, column{"_stream_seq", iceberg.PrimitiveTypes.Int64, true},
		column{"_received_at", ts, true})
}

// icebergType is the table type of a declared column type; json is kept as
// its text, as in the files.
func icebergType(t string) iceberg.Type {
	switch t {
	case config.TypeInt64:
		return iceberg.PrimitiveTypes.Int64
	case config.TypeDouble:
		return iceberg.PrimitiveTypes.Float64
	case config.TypeBoolean:
		return iceberg.PrimitiveTypes.Bool
	case config.TypeTimestamp:
		return iceberg.PrimitiveTypes.TimestampTz
	case config.TypeDate:
		return iceberg.PrimitiveTypes.Date
	}
	return iceberg.PrimitiveTypes.String
}

// Schema is the Iceberg schema of the sink's files. Field IDs are 1, 2, …
// in file order; a catalog may assign its own when the table is created,
// which is why the files carry none and the table a name mapping.
func Schema(s *config.Schema) *iceberg.Schema {
	cols := fileColumns(s)
	fields := make([]iceberg.NestedField, len(cols))
	for i, c := range cols {
		fields[i] = iceberg.NestedField{ID: i + 1, Name: c.name, Type: c.typ, Required: c.required}
	}
	return iceberg.NewSchema(0, fields...)
}

// PartitionSpec is the table's partitioning, the same as the object keys':
// identity on each partition column (app_id for the envelope), then the
// hour or day of the event time.
func PartitionSpec(s *config.Schema, granularity string, sc *iceberg.Schema) (iceberg.PartitionSpec, error) {
	parts, timeCol := []string{"app_id"}, "timestamp"
	if s != nil {
		parts, timeCol = s.PartitionBy, s.Time
	}
	var opts []iceberg.PartitionOption
	for _, p := range parts {
		opts = append(opts, iceberg.AddPartitionFieldByName(p, p, iceberg.IdentityTransform{}, sc, nil))
	}
	var tr iceberg.Transform = iceberg.HourTransform{}
	if granularity == config.GranularityDay {
		tr = iceberg.DayTransform{}
	}
	opts = append(opts, iceberg.AddPartitionFieldByName(timeCol, timeCol+"_"+tr.String(), tr, sc, nil))
	spec, err := iceberg.NewPartitionSpecOpts(opts...)
	if err != nil {
		return iceberg.PartitionSpec{}, fmt.Errorf("partition spec: %w", err)
	}
	return spec, nil
}
