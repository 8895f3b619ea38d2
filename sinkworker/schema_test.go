package sinkworker

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// iotSchema is the IoT telemetry sink of config/samples.
func iotSchema() *config.Schema {
	return &config.Schema{
		Columns: []config.Column{
			{Name: "device", Type: config.TypeString},
			{Name: "ts", Type: config.TypeTimestamp, Format: config.FormatEpochMillis},
			{Name: "temp", Type: config.TypeDouble, Required: true},
			{Name: "seq", Type: config.TypeInt64},
			{Name: "ok", Type: config.TypeBoolean},
			{Name: "site", Path: "tags.site", Type: config.TypeString},
			{Name: "day", Type: config.TypeDate},
			{Name: "raw", Path: "tags.raw", Type: config.TypeJSON},
		},
		Time:        "ts",
		PartitionBy: []string{"device"},
		Unmapped:    config.Unmapped{Action: config.UnmappedKeep, Column: "extra"},
	}
}

func declaredDecoder(t testing.TB, s *config.Schema) (decoder, *schemaPlan) {
	t.Helper()
	cfg := config.Default()
	cfg.NATSURL, cfg.Stream, cfg.Bucket, cfg.Schema = "nats://x:4222", "S", "b", s
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	plan := compileSchema(s)
	return newDecoder(cfg, plan), plan
}

func TestDeclaredDecode(t *testing.T) {
	d, plan := declaredDecoder(t, iotSchema())
	body := `{"device":"d/17 = ü","ts":1773482400123,"temp":21.5,"seq":1e3,"ok":true,` +
		`"tags":{"site":"b\u00e9rlin","raw":[1,{"x":null}],"zone":"z1"},"day":"2026-03-14","fw":"1.2","n":null}`
	var row Row
	if err := d.decode([]byte(body), &row); err != nil {
		t.Fatal(err)
	}
	if want := "device=d%2F17 %3D ü"; row.AppID != want {
		t.Errorf("partition %q, want %q", row.AppID, want)
	}
	if want := time.UnixMilli(1773482400123).UTC(); !row.Timestamp.Equal(want) {
		t.Errorf("event time %s, want %s", row.Timestamp, want)
	}
	v := d.values()
	if len(v) != plan.width {
		t.Fatalf("%d values, want %d", len(v), plan.width)
	}
	checks := []struct {
		got, want any
	}{
		{string(v[0].ByteArray()), "d/17 = ü"},
		{v[1].Int64(), int64(1773482400123000)},
		{v[2].Double(), 21.5},
		{v[3].Int64(), int64(1000)},
		{v[4].Boolean(), true},
		{string(v[5].ByteArray()), "bérlin"},
		{v[6].Int32(), int32(time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC).Unix() / 86400)},
		{string(v[7].ByteArray()), `[1,{"x":null}]`},
		// Only top-level members no path starts with: tags.zone is dropped.
		{string(v[8].ByteArray()), `{"fw":"1.2","n":null}`},
	}
	for i, c := range checks {
		if c.got != c.want {
			t.Errorf("value %d = %v, want %v", i, c.got, c.want)
		}
		if v[i].Column() != i {
			t.Errorf("value %d has column index %d", i, v[i].Column())
		}
	}
	if got, ok := hiveUnescape(strings.TrimPrefix(row.AppID, "device=")); !ok || got != "d/17 = ü" {
		t.Errorf("unescaped %q, %v", got, ok)
	}
}

func TestDeclaredPoison(t *testing.T) {
	d, _ := declaredDecoder(t, iotSchema())
	cases := []struct{ body, reason, detail string }{
		{`{"device":"d1","ts":1773482400123,"temp":"warm"}`, reasonInvalidColumn, "temp: not a number"},
		{`{"device":"d1","ts":1773482400123}`, reasonMissingColumn, "temp: required"},
		{`{"device":"d1","ts":1773482400123,"temp":null}`, reasonMissingColumn, "temp: required"},
		{`{"ts":1773482400123,"temp":1}`, reasonMissingColumn, "device: required"},
		{`{"device":"","ts":1773482400123,"temp":1}`, reasonInvalidColumn, "device: an empty string cannot be a partition value"},
		{`{"device":"` + strings.Repeat("/", 100) + `","ts":1773482400123,"temp":1}`, reasonInvalidColumn, "device: the partition value is longer than 256 bytes once escaped"},
		{`{"device":7,"ts":1773482400123,"temp":1}`, reasonInvalidColumn, "device: not a string"},
		{`{"device":"d1","ts":"2026-03-14T10:00:00Z","temp":1}`, reasonInvalidColumn, "ts: not a number (epochMillis)"},
		{`{"device":"d1","ts":5,"temp":1}`, reasonTimestampOutOfRange, "ts: 1970-01-01T00:00:00.005Z is outside"},
		{`{"device":"d1","temp":1}`, reasonMissingColumn, "ts: required"},
		{`{"device":"d1","ts":1773482400123,"temp":1,"seq":1.5}`, reasonInvalidColumn, "seq: not a whole number in the int64 range: 1.5"},
		{`{"device":"d1","ts":1773482400123,"temp":1,"ok":"yes"}`, reasonInvalidColumn, "ok: not a boolean"},
		{`{"device":"d1","ts":1773482400123,"temp":1,"day":"14/03/2026"}`, reasonInvalidColumn, "day: not a date (YYYY-MM-DD): 14/03/2026"},
		{`{"device":"d1","ts":1773482400123,"temp":1e999}`, reasonInvalidColumn, "temp: out of the double range"},
		{`{"device":"d1",`, reasonInvalidJSON, "unexpected end of JSON input"},
		{`[1,2]`, reasonInvalidJSON, "an event must be a JSON object"},
	}
	for _, c := range cases {
		var row Row
		err := d.decode([]byte(c.body), &row)
		var pe *poisonError
		if !errors.As(err, &pe) || pe.reason != c.reason || !strings.HasPrefix(pe.detail, c.detail) {
			t.Errorf("%s: got %v, want %s: %s…", c.body, err, c.reason, c.detail)
		}
	}
}

// The common event allocates nothing: its values alias the body.
func TestDeclaredDecodeDoesNotAllocate(t *testing.T) {
	s := iotSchema()
	s.Unmapped = config.Unmapped{}
	d, _ := declaredDecoder(t, s)
	body := []byte(`{"device":"d-17","ts":1773482400123,"temp":21.5,"seq":42,"ok":false,"tags":{"site":"berlin","raw":{"a":1}},"day":"2026-03-14"}`)
	var row Row
	if n := testing.AllocsPerRun(100, func() {
		if err := d.decode(body, &row); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations per event", n)
	}
}

// A declared batch encodes to a file with the declared columns, in order,
// with their types, followed by the provenance columns.
func TestDeclaredEncode(t *testing.T) {
	d, plan := declaredDecoder(t, iotSchema())
	enc, err := newEncoder("zstd", 1, plan)
	if err != nil {
		t.Fatal(err)
	}
	var vals []parquet.Value
	for i, body := range []string{
		`{"device":"d1","ts":1773482400123,"temp":21.5,"tags":{"site":"a"}}`,
		`{"device":"d1","ts":1773482400124,"temp":-3,"seq":7,"ok":true,"x":1}`,
	} {
		var row Row
		if err := d.decode([]byte(body), &row); err != nil {
			t.Fatal(err)
		}
		d.declared.setProvenance("iot.d1", uint64(i+1), time.UnixMilli(1773482400200))
		vals = append(vals, d.values()...)
	}
	var buf bytes.Buffer
	if err := enc.encodeValues(&buf, vals); err != nil {
		t.Fatal(err)
	}
	f, err := parquet.OpenFile(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, col := range f.Schema().Columns() {
		names = append(names, strings.Join(col, "."))
	}
	if got, want := strings.Join(names, ","), "device,ts,temp,seq,ok,site,day,raw,extra,_subject,_stream_seq,_received_at"; got != want {
		t.Errorf("columns %s, want %s", got, want)
	}
	if f.NumRows() != 2 {
		t.Errorf("%d rows", f.NumRows())
	}
	t.Log(f.Schema())
}

// A json column may hold an object whose fields are columns too.
func TestDeclaredColumnInsideAJSONColumn(t *testing.T) {
	s := benchSchema()
	d, _ := declaredDecoder(t, s)
	body := `{"app_id":"shop","event":"buy","timestamp":"2026-03-14T10:00:00Z","properties":{"path":"/cart","n":3},"context":{"ip":"10.0.0.9"}}`
	var row Row
	if err := d.decode([]byte(body), &row); err != nil {
		t.Fatal(err)
	}
	v := d.values()
	if got := string(v[6].ByteArray()); got != "/cart" {
		t.Errorf("path = %q", got)
	}
	if got := v[7].Int64(); got != 3 {
		t.Errorf("n = %d", got)
	}
	if got := string(v[9].ByteArray()); got != `{"path":"/cart","n":3}` {
		t.Errorf("properties = %q", got)
	}
	if got := string(v[8].ByteArray()); got != "10.0.0.9" {
		t.Errorf("ip = %q", got)
	}
}

// hiveUnescape reverses hiveEscape (a reader of the keys does this).
func hiveUnescape(s string) (string, bool) {
	if !strings.Contains(s, "%") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		b.WriteByte(byte(n))
		i += 2
	}
	return b.String(), true
}
