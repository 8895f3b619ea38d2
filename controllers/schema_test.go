package controllers

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// iotSchema is a sensor reading: {"device": "d1", "tags": {"site": "x"},
// "reading": {"celsius": 21.5}, "ts": 1738315800000, ...}, partitioned by
// site, with the fields no column names kept as JSON.
func iotSchema() *jetsinkv1.SchemaSpec {
	return &jetsinkv1.SchemaSpec{
		Columns: []jetsinkv1.SchemaColumn{
			{Name: "device", Type: "string", Required: true},
			{Name: "site", Path: "tags.site", Type: "string"},
			{Name: "temperature", Path: "reading.celsius", Type: "double"},
			{Name: "firmware", Path: "meta.fw.version", Type: "int64"},
			{Name: "online", Type: "boolean"},
			{Name: "day", Type: "date"},
			{Name: "attributes", Path: "attrs", Type: "json"},
			{Name: "measured_at", Path: "ts", Type: "timestamp", Format: "epochMillis"},
		},
		Time:        "measured_at",
		PartitionBy: []string{"site", "day"},
		Unmapped:    jetsinkv1.UnmappedSpec{Action: jetsinkv1.UnmappedKeep, Column: "extra"},
	}
}

func manyColumns(n int) []jetsinkv1.SchemaColumn {
	cols := []jetsinkv1.SchemaColumn{{Name: "ts", Type: "timestamp"}}
	for i := 1; i < n; i++ {
		cols = append(cols, jetsinkv1.SchemaColumn{Name: fmt.Sprintf("c%d", i), Type: "string"})
	}
	return cols
}

func TestSchemaValidationRefusesBadSchemasNamingTheField(t *testing.T) {
	ns := namespace(t)
	tests := []struct {
		name  string
		edit  func(*jetsinkv1.SchemaSpec)
		field string
		msg   string
	}{
		// Columns.
		{"duplicate column names", func(s *jetsinkv1.SchemaSpec) {
			s.Columns = append(s.Columns, jetsinkv1.SchemaColumn{Name: "device", Path: "device_id", Type: "string"})
		}, "spec.schema.columns[8]", "Duplicate value"},
		{"unknown type", func(s *jetsinkv1.SchemaSpec) { s.Columns[2].Type = "float" },
			"spec.schema.columns[2].type", "Unsupported value"},
		{"no columns", func(s *jetsinkv1.SchemaSpec) { s.Columns = []jetsinkv1.SchemaColumn{} },
			"spec.schema.columns", "should have at least 1 items"},
		{"65 columns", func(s *jetsinkv1.SchemaSpec) {
			s.Columns, s.Time, s.PartitionBy = manyColumns(65), "ts", nil
		}, "spec.schema.columns", "Too many"},
		{"name with capitals", func(s *jetsinkv1.SchemaSpec) { s.Columns[0].Name = "Device" },
			"spec.schema.columns[0].name", "should match"},
		{"name starting with a digit", func(s *jetsinkv1.SchemaSpec) { s.Columns[0].Name = "1device" },
			"spec.schema.columns[0].name", "should match"},
		{"name over 64 characters", func(s *jetsinkv1.SchemaSpec) { s.Columns[0].Name = strings.Repeat("d", 65) },
			"spec.schema.columns[0].name", "Too long"},
		{"provenance column name", func(s *jetsinkv1.SchemaSpec) { s.Columns[0].Name = "_subject" },
			"spec.schema.columns[0].name", "schema.columns.name must not be date, hour, _subject, _stream_seq or _received_at"},
		{"time partition name", func(s *jetsinkv1.SchemaSpec) { s.Columns[5].Name, s.PartitionBy = "date", []string{"site"} },
			"spec.schema.columns[5].name", "schema.columns.name must not be date, hour"},
		{"path with an empty key", func(s *jetsinkv1.SchemaSpec) { s.Columns[1].Path = "tags..site" },
			"spec.schema.columns[1].path", "should match"},
		{"path with a leading dot", func(s *jetsinkv1.SchemaSpec) { s.Columns[1].Path = ".site" },
			"spec.schema.columns[1].path", "should match"},
		{"path with a trailing dot", func(s *jetsinkv1.SchemaSpec) { s.Columns[1].Path = "tags." },
			"spec.schema.columns[1].path", "should match"},
		{"path over 256 characters", func(s *jetsinkv1.SchemaSpec) { s.Columns[1].Path = strings.Repeat("a", 257) },
			"spec.schema.columns[1].path", "Too long"},
		{"two columns on one path", func(s *jetsinkv1.SchemaSpec) { s.Columns[4].Path = "device" },
			"spec.schema.columns", "schema.columns: no two columns may have the same path"},
		// The worker would dead-letter every event with a site: device
		// would be an object, not a string.
		{"a path inside a string column's", func(s *jetsinkv1.SchemaSpec) { s.Columns[1].Path = "device.site" },
			"spec.schema.columns", "schema.columns: a column's path may be inside another column's path (tags.site inside tags) only when that column is of type json"},
		{"a path inside a timestamp column's path", func(s *jetsinkv1.SchemaSpec) { s.Columns[1].Path = "ts.site" },
			"spec.schema.columns", "schema.columns: a column's path may be inside another column's path (tags.site inside tags) only when that column is of type json"},
		{"unknown format", func(s *jetsinkv1.SchemaSpec) { s.Columns[7].Format = "epochNanos" },
			"spec.schema.columns[7].format", "Unsupported value"},
		{"format on a string column", func(s *jetsinkv1.SchemaSpec) { s.Columns[0].Format = "rfc3339" },
			"spec.schema.columns[0].format", "schema.columns.format is only for columns of type timestamp"},

		// The time column.
		{"time column that is not a timestamp", func(s *jetsinkv1.SchemaSpec) { s.Time = "temperature" },
			"spec.schema.time", "schema.time must name a column of type timestamp"},
		{"time column that is not declared", func(s *jetsinkv1.SchemaSpec) { s.Time = "received" },
			"spec.schema.time", "schema.time must name a declared column of type timestamp"},
		{"no time column", func(s *jetsinkv1.SchemaSpec) { s.Time = "" },
			"spec.schema.time", "should be at least 1 chars long"},

		// Partitions.
		{"partitionBy column that does not exist", func(s *jetsinkv1.SchemaSpec) { s.PartitionBy = []string{"site", "region"} },
			"spec.schema.partitionBy", "schema.partitionBy must name declared columns"},
		{"partitionBy a double", func(s *jetsinkv1.SchemaSpec) { s.PartitionBy = []string{"temperature"} },
			"spec.schema.partitionBy", "schema.partitionBy must name columns of type string, int64, boolean or date"},
		{"partitionBy a timestamp", func(s *jetsinkv1.SchemaSpec) { s.PartitionBy = []string{"measured_at"} },
			"spec.schema.partitionBy", "schema.partitionBy must name columns of type string, int64, boolean or date"},
		{"partitionBy a json column", func(s *jetsinkv1.SchemaSpec) { s.PartitionBy = []string{"attributes"} },
			"spec.schema.partitionBy", "schema.partitionBy must name columns of type string, int64, boolean or date"},
		{"partitionBy a column twice", func(s *jetsinkv1.SchemaSpec) { s.PartitionBy = []string{"site", "site"} },
			"spec.schema.partitionBy", "Duplicate value"},
		{"partitionBy 9 columns", func(s *jetsinkv1.SchemaSpec) {
			s.Columns, s.Time = manyColumns(10), "ts"
			s.PartitionBy = []string{"c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"}
		}, "spec.schema.partitionBy", "Too many"},

		// Unmapped fields.
		{"keep without a column", func(s *jetsinkv1.SchemaSpec) { s.Unmapped.Column = "" },
			"spec.schema.unmapped.column", "schema.unmapped.column is required with action keep"},
		{"drop with a column", func(s *jetsinkv1.SchemaSpec) { s.Unmapped.Action = jetsinkv1.UnmappedDrop },
			"spec.schema.unmapped.column", "schema.unmapped.column is only for action keep"},
		{"default action with a column", func(s *jetsinkv1.SchemaSpec) { s.Unmapped.Action = "" },
			"spec.schema.unmapped.column", "schema.unmapped.column is only for action keep"},
		{"keep in a declared column", func(s *jetsinkv1.SchemaSpec) { s.Unmapped.Column = "attributes" },
			"spec.schema.unmapped.column", "schema.unmapped.column must not be the name of a declared column"},
		{"keep in a reserved column", func(s *jetsinkv1.SchemaSpec) { s.Unmapped.Column = "_received_at" },
			"spec.schema.unmapped.column", "schema.unmapped.column must not be date, hour, _subject, _stream_seq or _received_at"},
		{"keep in a column with capitals", func(s *jetsinkv1.SchemaSpec) { s.Unmapped.Column = "Extra" },
			"spec.schema.unmapped.column", "should match"},
		{"unknown action", func(s *jetsinkv1.SchemaSpec) { s.Unmapped.Action = "ignore" },
			"spec.schema.unmapped.action", "Unsupported value"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSink(ns, validationURL)
			s.Name = fmt.Sprintf("bad-schema-%d", i)
			s.Spec.Schema = iotSchema()
			tt.edit(s.Spec.Schema)
			err := k8s.Create(t.Context(), s)
			wantRefused(t, err, tt.field, tt.msg)
			if testing.Verbose() && err != nil {
				t.Log(err)
			}
		})
	}
}

// TestSchemaValidationAcceptsGoodSchemas keeps the schema's rules from being
// over-strict, and checks that every spec the API server accepts is one the
// worker accepts too.
func TestSchemaValidationAcceptsGoodSchemas(t *testing.T) {
	ns := namespace(t)
	tests := []struct {
		name string
		edit func(*jetsinkv1.SchemaSpec)
	}{
		{"the IoT schema", func(*jetsinkv1.SchemaSpec) {}},
		{"only a time column", func(s *jetsinkv1.SchemaSpec) {
			*s = jetsinkv1.SchemaSpec{Columns: []jetsinkv1.SchemaColumn{{Name: "ts", Type: "timestamp"}}, Time: "ts"}
		}},
		{"unmapped fields dropped, said explicitly", func(s *jetsinkv1.SchemaSpec) {
			s.Unmapped = jetsinkv1.UnmappedSpec{Action: jetsinkv1.UnmappedDrop}
		}},
		{"64 columns, 8 partitions", func(s *jetsinkv1.SchemaSpec) {
			s.Columns, s.Time, s.Unmapped = manyColumns(64), "ts", jetsinkv1.UnmappedSpec{}
			s.PartitionBy = []string{"c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"}
		}},
		{"partitions of every partition type", func(s *jetsinkv1.SchemaSpec) {
			s.PartitionBy = []string{"site", "firmware", "online", "day"}
		}},
		{"paths that share a prefix but not a key", func(s *jetsinkv1.SchemaSpec) {
			// tags.site and tags.sites are siblings; device and device_id too.
			s.Columns = append(s.Columns,
				jetsinkv1.SchemaColumn{Name: "sites", Path: "tags.sites", Type: "json"},
				jetsinkv1.SchemaColumn{Name: "device_id", Type: "string"})
		}},
		{"columns inside a json column", func(s *jetsinkv1.SchemaSpec) {
			// attributes keeps attrs whole; site and its zone are columns too.
			s.Columns[1].Path = "attrs.site"
			s.Columns = append(s.Columns, jetsinkv1.SchemaColumn{Name: "zone", Path: "attrs.site_info.zone", Type: "string"})
		}},
		{"a path that is another column's name", func(s *jetsinkv1.SchemaSpec) {
			// The column "online" reads event.status; no column reads "online".
			s.Columns[4].Path = "status"
			s.Columns = append(s.Columns, jetsinkv1.SchemaColumn{Name: "status_text", Path: "online", Type: "string"})
		}},
		{"every timestamp format, and none", func(s *jetsinkv1.SchemaSpec) {
			for i, f := range []string{"", "rfc3339", "epochSeconds", "epochMicros"} {
				s.Columns = append(s.Columns, jetsinkv1.SchemaColumn{Name: fmt.Sprintf("t%d", i), Type: "timestamp", Format: f})
			}
		}},
		{"a name of 64 characters, a path of 256", func(s *jetsinkv1.SchemaSpec) {
			s.Columns[0].Name = "_" + strings.Repeat("d", 63)
			s.Columns[0].Path = strings.Repeat("a.", 127) + "bb"
		}},
		{"keys with spaces and symbols", func(s *jetsinkv1.SchemaSpec) { s.Columns[1].Path = "tags.site name/€" }},
		{"hour and date as keys of the event", func(s *jetsinkv1.SchemaSpec) {
			s.Columns[5].Path = "date"
			s.Columns = append(s.Columns, jetsinkv1.SchemaColumn{Name: "event_hour", Path: "hour", Type: "int64"})
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSink(ns, validationURL)
			s.Name = fmt.Sprintf("good-schema-%d", i)
			s.Spec.Schema = iotSchema()
			tt.edit(s.Spec.Schema)
			if err := k8s.Create(t.Context(), s); err != nil {
				t.Fatalf("refused a good schema: %v", err)
			}
			// What the API server stored (with its defaults) the worker
			// accepts: nothing passes the CRD only to stall the sink.
			stored, err := get(t, &jetsinkv1.WarehouseSink{}, ns, s.Name)
			if err != nil {
				t.Fatal(err)
			}
			if err := workload.WorkerConfig(stored).Validate(); err != nil {
				t.Errorf("the API server accepted a schema the worker refuses: %v", err)
			}
		})
	}
}

// The samples of sinks with a schema or a table are ones the API server and
// the worker accept as they are written.
func TestSchemaAndTableSamplesAreAccepted(t *testing.T) {
	ns := namespace(t)
	for name, shows := range map[string]func(*jetsinkv1.WarehouseSink) bool{
		"iot_telemetry_warehousesink.yaml":        func(s *jetsinkv1.WarehouseSink) bool { return s.Spec.Schema != nil },
		"orders_by_tenant_warehousesink.yaml":     func(s *jetsinkv1.WarehouseSink) bool { return s.Spec.Schema != nil },
		"events_iceberg_table_warehousesink.yaml": func(s *jetsinkv1.WarehouseSink) bool { return s.Spec.Destination.Table != nil },
	} {
		t.Run(name, func(t *testing.T) {
			text, err := os.ReadFile(filepath.Join("..", "config", "samples", name))
			if err != nil {
				t.Fatal(err)
			}
			s := &jetsinkv1.WarehouseSink{}
			if err := yaml.UnmarshalStrict(text, s); err != nil {
				t.Fatalf("not a WarehouseSink: %v", err)
			}
			if !shows(s) {
				t.Fatal("the sample does not show what it is for (a schema, a table)")
			}
			s.Namespace = ns
			if err := k8s.Create(t.Context(), s, client.DryRunAll); err != nil {
				t.Fatalf("the API server refuses the sample: %v", err)
			}
			if err := workload.WorkerConfig(s).Validate(); err != nil {
				t.Errorf("the worker refuses the sample: %v", err)
			}
		})
	}
}

// The API server defaults unmapped.action to drop, for a schema that says
// nothing about unmapped fields.
func TestSchemaUnmappedDefaultsToDrop(t *testing.T) {
	ns := namespace(t)
	s := newSink(ns, validationURL)
	s.Spec.Schema = iotSchema()
	s.Spec.Schema.Unmapped = jetsinkv1.UnmappedSpec{}
	mustCreate(t, s)
	stored, err := get(t, &jetsinkv1.WarehouseSink{}, ns, s.Name)
	if err != nil {
		t.Fatal(err)
	}
	if got := stored.Spec.Schema.Unmapped; got.Action != jetsinkv1.UnmappedDrop || got.Column != "" {
		t.Errorf("unmapped = %+v, want action drop", got)
	}
}

// workerSchema is the JETSINK_SCHEMA of the sink's worker Deployment, and
// whether it has one.
func workerSchema(t *testing.T, ns string) (*appsv1.Deployment, string, bool) {
	t.Helper()
	d, err := get(t, &appsv1.Deployment{}, ns, "events")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "JETSINK_SCHEMA" {
			return d, e.Value, true
		}
	}
	return d, "", false
}

// A sink without a schema renders no JETSINK_SCHEMA (the analytics
// envelope, and the pod template it always had); adding one, and editing
// it, changes the pod template, so the Deployment rolls the workers onto
// it, and the sink says it is rolling out until they run it.
func TestSchemaReachesTheWorkersAndRollsThem(t *testing.T) {
	ns, srv := withStream(t)
	sinkOnS3(t, ns, srv, s3Keys)
	markRolledOut(t, ns, "events")
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionTrue, jetsinkv1.ReasonAvailable)
	before, v, ok := workerSchema(t, ns)
	if ok {
		t.Fatalf("JETSINK_SCHEMA=%s for a sink without a schema", v)
	}

	// rendered waits for the Deployment to carry want as JETSINK_SCHEMA
	// and returns its pod template.
	rendered := func(want *config.Schema) *appsv1.Deployment {
		t.Helper()
		text, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var d *appsv1.Deployment
		eventually(t, 20*time.Second, func() error {
			var got string
			d, got, _ = workerSchema(t, ns)
			if got != string(text) {
				return fmt.Errorf("JETSINK_SCHEMA = %s, want %s", got, text)
			}
			return nil
		})
		return d
	}

	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) { s.Spec.Schema = iotSchema() })
	want := &config.Schema{
		Columns: []config.Column{
			{Name: "device", Type: "string", Required: true},
			{Name: "site", Path: "tags.site", Type: "string"},
			{Name: "temperature", Path: "reading.celsius", Type: "double"},
			{Name: "firmware", Path: "meta.fw.version", Type: "int64"},
			{Name: "online", Type: "boolean"},
			{Name: "day", Type: "date"},
			{Name: "attributes", Path: "attrs", Type: "json"},
			{Name: "measured_at", Path: "ts", Type: "timestamp", Format: "epochMillis"},
		},
		Time: "measured_at", PartitionBy: []string{"site", "day"},
		Unmapped: config.Unmapped{Action: "keep", Column: "extra"},
	}
	withSchema := rendered(want)
	if withSchema.Generation == before.Generation {
		t.Error("the Deployment's generation did not move with the schema")
	}
	wantCondition(t, ns, "events", jetsinkv1.ConditionReconciling, metav1.ConditionTrue, jetsinkv1.ReasonRollingOut)
	markRolledOut(t, ns, "events")
	wantCondition(t, ns, "events", jetsinkv1.ConditionReady, metav1.ConditionTrue, jetsinkv1.ReasonAvailable)

	// An edit of one column rolls them again.
	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) { s.Spec.Schema.Columns[2].Type = "int64" })
	want.Columns[2].Type = "int64"
	edited := rendered(want)
	if edited.Annotations[workload.AnnotationSpecHash] == withSchema.Annotations[workload.AnnotationSpecHash] {
		t.Error("the spec hash did not move with the schema: the controller would not have applied it")
	}
	wantCondition(t, ns, "events", jetsinkv1.ConditionReconciling, metav1.ConditionTrue, jetsinkv1.ReasonRollingOut)

	// Removing the schema goes back to the envelope.
	patchSink(t, ns, func(s *jetsinkv1.WarehouseSink) { s.Spec.Schema = nil })
	eventually(t, 20*time.Second, func() error {
		if _, v, ok := workerSchema(t, ns); ok {
			return fmt.Errorf("JETSINK_SCHEMA=%s after the schema was removed", v)
		}
		return nil
	})
}
