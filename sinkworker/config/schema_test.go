package config

import (
	"reflect"
	"strings"
	"testing"
)

func iotSchema() *Schema {
	return &Schema{
		Columns: []Column{
			{Name: "device", Type: TypeString},
			{Name: "ts", Type: TypeTimestamp, Format: FormatEpochMillis},
			{Name: "temp", Type: TypeDouble, Required: true},
			{Name: "site", Path: "tags.site", Type: TypeString},
		},
		Time:        "ts",
		PartitionBy: []string{"device"},
		Unmapped:    Unmapped{Action: UnmappedKeep, Column: "extra"},
	}
}

func validConfig() Config {
	c := Default()
	c.NATSURL, c.Stream, c.Bucket = "nats://127.0.0.1:4222", "EVENTS", "lake"
	return c
}

// The schema reaches the worker as the operator rendered it.
func TestSchemaTravelsThroughTheEnvironment(t *testing.T) {
	c := validConfig()
	c.Schema = iotSchema()
	env := map[string]string{}
	for _, e := range c.Environ() {
		env[e.Name] = e.Value
	}
	if !strings.Contains(env["JETSINK_SCHEMA"], `"path":"tags.site"`) {
		t.Fatalf("JETSINK_SCHEMA = %q", env["JETSINK_SCHEMA"])
	}
	got, err := Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Schema, c.Schema) {
		t.Errorf("loaded %+v, rendered %+v", got.Schema, c.Schema)
	}
}

// A sink without a schema renders no JETSINK_SCHEMA at all, so its pod
// template is what it was before schemas existed and it does not roll.
func TestNoSchemaRendersNothing(t *testing.T) {
	for _, e := range validConfig().Environ() {
		if e.Name == "JETSINK_SCHEMA" {
			t.Fatalf("rendered %s=%q for the envelope", e.Name, e.Value)
		}
	}
}

func TestSchemaValidation(t *testing.T) {
	cases := map[string]struct {
		edit func(*Schema)
		want string
	}{
		"duplicate name":    {func(s *Schema) { s.Columns[3].Name = "temp" }, `columns[3].name: "temp" is declared twice`},
		"unknown type":      {func(s *Schema) { s.Columns[2].Type = "float" }, `columns[2].type: "float" is not one of`},
		"time not a ts":     {func(s *Schema) { s.Time = "temp" }, `time: column "temp" is a double, not a timestamp`},
		"time missing":      {func(s *Schema) { s.Time = "" }, `time: "" must name a declared timestamp column`},
		"partition missing": {func(s *Schema) { s.PartitionBy = []string{"tenant"} }, `partitionBy[0]: "tenant" is not a declared column`},
		"partition double":  {func(s *Schema) { s.PartitionBy = []string{"temp"} }, `partitionBy[0]: column "temp" is a double`},
		"reserved":          {func(s *Schema) { s.Columns[0].Name = "_subject" }, `columns[0].name: "_subject" is reserved`},
		"upper case":        {func(s *Schema) { s.Columns[0].Name = "Device" }, `columns[0].name: "Device" must match`},
		"inside a string":   {func(s *Schema) { s.Columns[0].Path = "tags" }, `columns: the path "tags.site" of column "site" is inside the path "tags" of column "device", which is a string`},
		"same path":         {func(s *Schema) { s.Columns[0].Path = "tags.site" }, `columns[3].path: "tags.site" is also the path of column "device"`},
		"empty segment":     {func(s *Schema) { s.Columns[3].Path = "tags..site" }, `columns[3].path: "tags..site" must be object keys`},
		"format on string":  {func(s *Schema) { s.Columns[0].Format = FormatEpochMillis }, `columns[0].format: only a timestamp column takes a format`},
		"unknown format":    {func(s *Schema) { s.Columns[1].Format = "unix" }, `columns[1].format: "unix" is not one of`},
		"keep without name": {func(s *Schema) { s.Unmapped.Column = "" }, `unmapped.column: "" must match`},
		"keep onto column":  {func(s *Schema) { s.Unmapped.Column = "temp" }, `unmapped.column: "temp" is already a column`},
		"unknown action":    {func(s *Schema) { s.Unmapped.Action = "ignore" }, `unmapped.action: "ignore" is not one of drop, keep`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := validConfig()
			c.Schema = iotSchema()
			tc.edit(c.Schema)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), "JETSINK_SCHEMA: "+tc.want) {
				t.Fatalf("Validate() = %v, want JETSINK_SCHEMA: %s", err, tc.want)
			}
		})
	}
	c := validConfig()
	c.Schema = iotSchema()
	if err := c.Validate(); err != nil {
		t.Fatalf("the IoT schema: %v", err)
	}
}

func TestSchemaRefusesUnknownFields(t *testing.T) {
	_, err := Load(func(k string) string {
		return map[string]string{"JETSINK_NATS_URL": "nats://x:4222", "JETSINK_STREAM": "S", "JETSINK_S3_BUCKET": "b",
			"JETSINK_SCHEMA": `{"columns":[{"name":"ts","type":"timestamp"}],"time":"ts","partitions":["x"]}`}[k]
	})
	if err == nil || !strings.Contains(err.Error(), `unknown field "partitions"`) {
		t.Fatalf("Load = %v", err)
	}
}
