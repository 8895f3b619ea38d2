package lake_test

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2" // registers the "duckdb" driver
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/jetsink/jetsink/internal/testutil/natstest"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
	"github.com/jetsink/jetsink/sinkworker"
	"github.com/jetsink/jetsink/sinkworker/config"
)

const (
	stream     = "IOT"
	bucket     = "lake"
	prefix     = "iot/"
	dlqSubject = "dlq.iot"
)

// iotSchema is the IoT telemetry sink's declared schema.
func iotSchema(unmapped config.Unmapped) *config.Schema {
	return &config.Schema{
		Columns: []config.Column{
			{Name: "device", Type: config.TypeString},
			{Name: "ts", Type: config.TypeTimestamp, Format: config.FormatEpochMillis},
			{Name: "temp", Type: config.TypeDouble, Required: true},
			{Name: "ok", Type: config.TypeBoolean},
			{Name: "seq", Type: config.TypeInt64},
			{Name: "site", Path: "tags.site", Type: config.TypeString},
		},
		Time:        "ts",
		PartitionBy: []string{"device"},
		Unmapped:    unmapped,
	}
}

// devices are the partition values: plain ones, and ones Hive must escape
// ('/', '=', '"', '#', '[', ']', a literal '%') around characters it must
// not (spaces, '+', '&', non-ASCII). json.Marshal writes '&' as \u0026 and
// '"' as \", so the decoder unescapes these.
var devices = []string{"d-17", "d-42", "rack 7/slot=3 ü", `pump+1 "main"&#[%41]`}

// reading is one valid event and the values it must be read back with.
type reading struct {
	subject string
	body    []byte
	device  string
	ts      time.Time
	temp    float64
	ok      *bool
	seq     *int64
	site    *string
	fw      *string
	// extra is the unmapped column's text when kept: the top-level
	// members no column reads, in body order; nil when there are none.
	extra *string
}

// member is one top-level member of an event, in the order it is written.
type member struct {
	key string
	val any
}

func (m member) String() string {
	k, _ := json.Marshal(m.key)
	v, err := json.Marshal(m.val)
	if err != nil {
		panic(err)
	}
	return string(k) + ":" + string(v)
}

func object(ms []member) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// exampleEvent is the first reading's body, as a device sends it.
const exampleEvent = `{"device":"d-17","ts":1764660000123,"temp":21.5,"ok":true,"seq":42,"tags":{"site":"berlin"},"fw":"1.2"}`

// makeReadings returns n valid events over every device and four hours
// of two days, with optional columns present, absent or null, values that
// need JSON unescaping, and unmapped fields (fw, note) or none.
func makeReadings(n int) []reading {
	base := time.UnixMilli(1764660000123).UTC() // 2025-12-02T07:20:00.123Z
	sites := []string{"berlin", "paris", `san "josé" \ 7`}
	out := make([]reading, n)
	for i := range out {
		dev := i % len(devices)
		slot := (i / len(devices)) % 4 // 07, 13, 19 and 01 the next day
		r := reading{
			subject: fmt.Sprintf("iot.dev%d", dev),
			device:  devices[dev],
			ts:      base.Add(time.Duration(slot)*6*time.Hour + time.Duration(i)*1003*time.Millisecond),
			temp:    21.5 + float64(i%40)*0.25 - float64(i%7)*3.1,
		}
		var ms, extra []member
		if i%9 == 4 {
			// Before the columns: the kept object keeps body order.
			note := member{"note", map[string]any{"text": "hello ü", "n": []int{1, 2}}}
			ms, extra = append(ms, note), append(extra, note)
		}
		if i%3 == 1 {
			r.temp = float64(15 + i%10) // a JSON integer in a double column
		}
		var ts any = r.ts.UnixMilli()
		if i%11 == 10 {
			ts = json.Number(fmt.Sprintf("%d.25", r.ts.UnixMilli())) // epochMillis with microseconds
			r.ts = r.ts.Add(250 * time.Microsecond)
		}
		ms = append(ms, member{"device", r.device}, member{"ts", ts}, member{"temp", r.temp})
		switch i % 5 {
		case 0, 3:
			ok := i%2 == 0
			r.ok = &ok
			ms = append(ms, member{"ok", ok})
		case 2:
			ms = append(ms, member{"ok", nil})
		}
		switch i % 7 {
		case 3: // absent
		case 4:
			s := int64(1<<53 + 1 + i) // not a float64
			r.seq = &s
		case 5:
			s := int64(-i)
			r.seq = &s
		default:
			s := int64(42 + i)
			r.seq = &s
		}
		if r.seq != nil {
			ms = append(ms, member{"seq", *r.seq})
		}
		switch i % 6 {
		case 0, 1:
			site := sites[i%len(sites)]
			r.site = &site
			ms = append(ms, member{"tags", map[string]any{"site": site}})
		case 2: // absent
		case 3:
			ms = append(ms, member{"tags", map[string]any{"zone": "z1"}})
		case 4:
			site := sites[2]
			r.site = &site
			// Other members under tags are neither a column nor unmapped.
			ms = append(ms, member{"tags", map[string]any{"zone": "z2", "site": site}})
		case 5:
			ms = append(ms, member{"tags", nil})
		}
		if i%4 != 3 {
			fw := "1.2"
			if i%8 >= 4 {
				fw = "1.3-rc.1"
			}
			r.fw = &fw
			m := member{"fw", fw}
			ms, extra = append(ms, m), append(extra, m)
		}
		if len(extra) > 0 {
			s := object(extra)
			r.extra = &s
		}
		r.body = []byte(object(ms))
		out[i] = r
	}
	return out
}

// poisonEvent is an event the worker must dead-letter, and why.
type poisonEvent struct {
	body, reason, detail string
}

var poisons = []poisonEvent{
	{`{"device":"d-17","ts":1764660000123,"temp":"warm","poison":1}`, "invalid_column", "temp: not a number"},
	{`{"device":"d-17","ts":1764660000123,"poison":2}`, "missing_column", "temp: required"},
	{`{"device":"d-42","ts":1764660000123,"temp":null,"poison":3}`, "missing_column", "temp: required"},
	{`{"device":"d-42","temp":20.5,"poison":4}`, "missing_column", "ts: required"},
	// The detail is encoding/json's; any will do.
	{`not json {"poison":5}`, "invalid_json", ""},
}

// lake is one run of the worker over the published events: the files it
// wrote, downloaded, and a DuckDB to read them with.
type lake struct {
	dir      string   // the downloaded prefix, keys as paths below it
	keys     []string // every object key under the prefix
	db       *sql.DB  // DuckDB, in memory
	bySeq    map[uint64]reading
	dlq      map[string]jetstream.Msg // dead-lettered messages by body
	reg      *prometheus.Registry
	started  time.Time
	finished time.Time
}

// glob is the read_parquet pattern of every downloaded file.
func (l *lake) glob() string { return sqlString(l.dir + "/**/*.parquet") }

// run starts JetStream, versitygw and a worker with schema, publishes
// readings with the poison among them, waits until every event is ACKed
// or Term'd, drains the worker and downloads what it wrote.
func run(t *testing.T, schema *config.Schema, readings []reading) *lake {
	t.Helper()
	ns := natstest.Start(t)
	_, js := ns.JetStream(t)
	ns.CreateStream(t, stream, "iot.>")
	ns.CreateStream(t, "DLQ", dlqSubject)
	s3 := s3test.Start(t)
	s3.CreateBucket(t, bucket)
	s3.SetEnv(t)

	cfg := config.Default()
	cfg.NATSURL = ns.ClientURL()
	cfg.Stream = stream
	cfg.FilterSubjects = []string{"iot.>"}
	cfg.DeadLetterSubject = dlqSubject
	cfg.AckWait = 10 * time.Second
	cfg.Bucket = bucket
	cfg.Prefix = prefix
	cfg.Endpoint = s3.URL
	cfg.ForcePathStyle = true
	cfg.Workers = 2
	// Small files, so that partitions hold several and the glob unions them.
	cfg.BatchMaxEvents = 10
	cfg.BatchMaxAge = 300 * time.Millisecond
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.Schema = schema

	l := &lake{reg: prometheus.NewRegistry(), bySeq: map[uint64]reading{}, dlq: map[string]jetstream.Msg{}, started: time.Now()}
	w, err := sinkworker.New(cfg, sinkworker.Options{Logger: testLogger(), Registry: l.reg})
	if err != nil {
		t.Fatalf("sinkworker.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(cfg.ShutdownTimeout + 5*time.Second):
			t.Fatalf("worker did not drain within ShutdownTimeout (%s)", cfg.ShutdownTimeout)
		}
	}
	t.Cleanup(stop)

	// One poison event every 60 readings.
	if len(readings) < 60*len(poisons) {
		t.Fatalf("%d readings leave no room for %d poison events", len(readings), len(poisons))
	}
	pctx, pcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer pcancel()
	for i, r := range readings {
		ack, err := js.Publish(pctx, r.subject, r.body)
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		l.bySeq[ack.Sequence] = r
		if i%60 == 30 && i/60 < len(poisons) {
			if _, err := js.Publish(pctx, "iot.bad", []byte(poisons[i/60].body)); err != nil {
				t.Fatalf("publish: %v", err)
			}
		}
	}

	deadline := time.Now().Add(30 * time.Second)
	for counter(t, l.reg, "jetsink_events_acked_total") != float64(len(readings)) ||
		counter(t, l.reg, "jetsink_events_terminated_total") != float64(len(poisons)) {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: %v of %d events ACKed, %v of %d poison Term'd", counter(t, l.reg, "jetsink_events_acked_total"),
				len(readings), counter(t, l.reg, "jetsink_events_terminated_total"), len(poisons))
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	l.finished = time.Now()

	dlq, err := js.OrderedConsumer(t.Context(), "DLQ", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := dlq.Fetch(len(poisons)+1, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		l.dlq[string(m.Data())] = m
	}

	l.dir = t.TempDir()
	l.keys = s3.List(t, bucket, prefix)
	for _, key := range l.keys {
		path := filepath.Join(l.dir, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, s3.Get(t, bucket, key), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if len(l.keys) == 0 {
		t.Fatal("no objects under the prefix")
	}
	l.db = openDuckDB(t)
	return l
}

// openDuckDB opens an in-memory DuckDB that only uses what is linked into
// the test: parquet, json and icu are built into the bindings, and nothing
// may be downloaded.
func openDuckDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1) // one connection: the settings below are per session
	for _, q := range []string{
		"SET autoinstall_known_extensions = false",
		"SET autoload_known_extensions = false",
		"SET TimeZone = 'UTC'",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return db
}

// A declared schema's files, read by DuckDB, have the declared columns
// and types in order, hold every valid event once with its published
// values, sit under the Hive path of their rows, and leave out the
// unmapped fields; the poison is on the dead-letter subject, naming the
// column.
func TestDeclaredSchemaReadByDuckDB(t *testing.T) {
	readings := makeReadings(400)
	if got := string(readings[0].body); got != exampleEvent {
		t.Fatalf("first reading %s, want the example %s", got, exampleEvent)
	}
	l := run(t, iotSchema(config.Unmapped{}), readings)

	l.checkDescribe(t, "device VARCHAR", "ts TIMESTAMP WITH TIME ZONE", "temp DOUBLE", "ok BOOLEAN", "seq BIGINT", "site VARCHAR",
		"_subject VARCHAR", "_stream_seq BIGINT", "_received_at TIMESTAMP WITH TIME ZONE")
	l.checkRows(t, false)
	l.checkPartitions(t)
	l.checkDeadLetters(t)
}

// With unmapped keep, the top-level fields no column reads are one JSON
// object in the extra column, which DuckDB's json functions parse.
func TestUnmappedKeepReadByDuckDB(t *testing.T) {
	readings := makeReadings(300)
	l := run(t, iotSchema(config.Unmapped{Action: config.UnmappedKeep, Column: "extra"}), readings)

	// The json column is plain UTF-8 text in the file (no JSON logical
	// type), so DuckDB reads it as VARCHAR.
	l.checkDescribe(t, "device VARCHAR", "ts TIMESTAMP WITH TIME ZONE", "temp DOUBLE", "ok BOOLEAN", "seq BIGINT", "site VARCHAR",
		"extra VARCHAR", "_subject VARCHAR", "_stream_seq BIGINT", "_received_at TIMESTAMP WITH TIME ZONE")
	l.checkRows(t, true)
	l.checkPartitions(t)
	l.checkDeadLetters(t)

	// The json extension is statically linked into the bindings (no
	// download): DuckDB parses the column itself.
	rows, err := l.db.Query(`SELECT _stream_seq, json_valid(extra), json_extract_string(extra, '$.fw'),
		json_extract_string(extra, '$.note.text'), list_sort(json_keys(extra))::VARCHAR
		FROM read_parquet(` + l.glob() + `, hive_partitioning=false) WHERE extra IS NOT NULL`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var (
			seq      uint64
			valid    bool
			fw, note *string
			keys     string
		)
		if err := rows.Scan(&seq, &valid, &fw, &note, &keys); err != nil {
			t.Fatal(err)
		}
		n++
		r := l.bySeq[seq]
		wantKeys := []string{}
		if r.fw != nil {
			wantKeys = append(wantKeys, "fw")
		}
		var wantNote *string
		if strings.Contains(*r.extra, `"note"`) {
			s := "hello ü"
			wantNote = &s
			wantKeys = append(wantKeys, "note")
		}
		if !valid || !equal(fw, r.fw) || !equal(note, wantNote) || keys != "["+strings.Join(wantKeys, ", ")+"]" {
			t.Errorf("seq %d: extra parsed as valid=%v fw=%s note=%s keys=%s, want fw=%s note=%s keys=%v",
				seq, valid, str(fw), str(note), keys, str(r.fw), str(wantNote), wantKeys)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, r := range readings {
		if r.extra != nil {
			want++
		}
	}
	if n != want || want == 0 {
		t.Errorf("%d rows with extra, want %d", n, want)
	}
}

// checkDescribe asserts the files' columns, "name TYPE" in order, and logs
// DuckDB's DESCRIBE.
func (l *lake) checkDescribe(t *testing.T, want ...string) {
	t.Helper()
	rows, err := l.db.Query(`DESCRIBE SELECT * FROM read_parquet(` + l.glob() + `, hive_partitioning=false)`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	table := []string{strings.Join(cols, " | ")}
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		line := make([]string, len(vals))
		for i, v := range vals {
			line[i] = v.String
			if !v.Valid {
				line[i] = "NULL"
			}
		}
		table = append(table, strings.Join(line, " | "))
		got = append(got, vals[0].String+" "+vals[1].String)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("DESCRIBE SELECT * FROM read_parquet('…/**/*.parquet', hive_partitioning=false) over %d files:\n%s",
		len(l.keys), strings.Join(table, "\n"))
	if !slices.Equal(got, want) {
		t.Errorf("columns:\n  %s\nwant:\n  %s", strings.Join(got, ", "), strings.Join(want, ", "))
	}
}

// checkRows asserts that the files hold every published reading exactly
// once, each with the values it was published with.
func (l *lake) checkRows(t *testing.T, withExtra bool) {
	t.Helper()
	var n, distinct int
	if err := l.db.QueryRow(`SELECT count(*), count(DISTINCT _stream_seq) FROM read_parquet(`+l.glob()+`, hive_partitioning=false)`).
		Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != len(l.bySeq) || distinct != len(l.bySeq) {
		t.Errorf("%d rows, %d distinct _stream_seq; want %d of each", n, distinct, len(l.bySeq))
	}

	extra := "NULL"
	if withExtra {
		extra = "extra"
	}
	rows, err := l.db.Query(`SELECT device, ts, temp, ok, seq, site, ` + extra + `, _subject, _stream_seq, _received_at
		FROM read_parquet(` + l.glob() + `, hive_partitioning=false) ORDER BY _stream_seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := map[uint64]bool{}
	for rows.Next() {
		var (
			device, subject string
			ts, received    time.Time
			temp            float64
			ok              *bool
			seq             *int64
			site, extra     *string
			streamSeq       uint64
		)
		if err := rows.Scan(&device, &ts, &temp, &ok, &seq, &site, &extra, &subject, &streamSeq, &received); err != nil {
			t.Fatal(err)
		}
		r, found := l.bySeq[streamSeq]
		if !found {
			t.Errorf("row with _stream_seq %d, which is no valid event", streamSeq)
			continue
		}
		seen[streamSeq] = true
		if !withExtra {
			r.extra = nil
		}
		if device != r.device || !ts.Equal(r.ts) || temp != r.temp || !equal(ok, r.ok) || !equal(seq, r.seq) ||
			!equal(site, r.site) || !equal(extra, r.extra) || subject != r.subject {
			t.Errorf("seq %d read back as device=%q ts=%s temp=%v ok=%s seq=%s site=%s extra=%s subject=%s\n"+
				"published %s on %s", streamSeq, device, ts.Format(time.RFC3339Nano), temp, str(ok), str(seq), str(site), str(extra),
				subject, r.body, r.subject)
		}
		if received.Before(l.started.Truncate(time.Microsecond)) || received.After(l.finished) {
			t.Errorf("seq %d: _received_at %s outside the run [%s, %s]", streamSeq, received, l.started, l.finished)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for seq, r := range l.bySeq {
		if !seen[seq] {
			t.Errorf("event seq %d (%s) not written", seq, r.body)
		}
	}
}

// objectKey is the shape of every key: the escaped partition value, the
// event time's date and hour, a file.
var objectKey = regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `device=([^/]+)/date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/[^/]+\.parquet$`)

// checkPartitions asserts that each file's key is the Hive path of every
// row in it: the device segment unescapes to the row's device, the date
// and hour are the row's event time's. It reads the path twice, with the
// test's own decoder and with DuckDB's hive_partitioning.
func (l *lake) checkPartitions(t *testing.T) {
	t.Helper()
	type where struct{ device, date, hour string }
	byFile := map[string]where{} // downloaded path → the key's partition
	segments := map[string]string{}
	for _, key := range l.keys {
		m := objectKey.FindStringSubmatch(key)
		if m == nil {
			t.Errorf("object key %q is not %s", key, objectKey)
			continue
		}
		device, err := hiveUnescape(m[1])
		if err != nil {
			t.Errorf("object key %q: device segment: %v", key, err)
			continue
		}
		if strings.ContainsAny(m[1], "=/") {
			t.Errorf("object key %q: the device segment %q keeps a '=' or '/' unescaped", key, m[1])
		}
		segments[device] = m[1]
		byFile[filepath.Join(l.dir, filepath.FromSlash(key))] = where{device, m[2], m[3]}
	}
	// Hive's escaping: '/', '=' and '%' as %XX; spaces, '+' and UTF-8 as
	// they are.
	for device, want := range map[string]string{
		"d-17": "d-17", "rack 7/slot=3 ü": "rack 7%2Fslot%3D3 ü", `pump+1 "main"&#[%41]`: "pump+1 %22main%22&%23%5B%2541%5D",
	} {
		if got := segments[device]; got != want {
			t.Errorf("device %q is the path segment device=%s, want device=%s", device, got, want)
		}
	}
	if len(segments) != len(devices) {
		t.Errorf("keys name devices %q, want %q", slices.Sorted(maps.Keys(segments)), devices)
	}

	// DuckDB (1.5.6, in the bindings) decodes %XX in Hive partition values,
	// once, and leaves '+' alone; a partition value replaces the file's
	// column of the same name. So hive_partitioning=true gives the key's
	// device, decoded by DuckDB, next to the file's own (false). The probe
	// shows both on a file whose column says something else.
	probe := t.TempDir()
	for device, seg := range segments {
		path := filepath.Join(probe, "device="+seg, "p.parquet")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := l.db.Exec(`COPY (SELECT 'the file''s own' AS device) TO ` + sqlString(path) + ` (FORMAT parquet)`); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := l.db.QueryRow(`SELECT device FROM read_parquet(` + sqlString(path) + `, hive_partitioning=true)`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != device {
			t.Errorf("DuckDB reads the partition device=%s as %q, want %q", seg, got, device)
		}
	}
	rows, err := l.db.Query(`SELECT f.filename, f.device, f.ts, h.device, h.date::VARCHAR, h.hour::VARCHAR
		FROM read_parquet(` + l.glob() + `, hive_partitioning=false, filename=true) f
		JOIN read_parquet(` + l.glob() + `, hive_partitioning=true) h USING (_stream_seq)`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var (
			file, device, hiveDevice, hiveDate, hiveHour string
			ts                                           time.Time
		)
		if err := rows.Scan(&file, &device, &ts, &hiveDevice, &hiveDate, &hiveHour); err != nil {
			t.Fatal(err)
		}
		n++
		key, ok := byFile[file]
		if !ok {
			t.Errorf("DuckDB read %s, which is no downloaded key", file)
			continue
		}
		date, hour := ts.UTC().Format(time.DateOnly), ts.UTC().Format("15")
		if key != (where{device, date, hour}) {
			t.Errorf("%s holds a row of device %q at %s, but its key says device=%q date=%s hour=%s",
				strings.TrimPrefix(file, l.dir+"/"), device, ts.Format(time.RFC3339Nano), key.device, key.date, key.hour)
		}
		if hiveDevice != device || hiveDate != date || hiveHour != hour {
			t.Errorf("%s: DuckDB's hive partition is device=%q date=%s hour=%s, the row's device=%q date=%s hour=%s",
				strings.TrimPrefix(file, l.dir+"/"), hiveDevice, hiveDate, hiveHour, device, date, hour)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(l.bySeq) {
		t.Errorf("the partition check read %d rows, want %d", n, len(l.bySeq))
	}
	hours := map[string]bool{}
	for _, w := range byFile {
		hours[w.date+"T"+w.hour] = true
	}
	if len(hours) < 2 {
		t.Errorf("files in hours %v, want several", hours)
	}
}

// checkDeadLetters asserts that each poison event is on the dead-letter
// subject, body intact, with the reason and the column at fault, and that
// the worker counted it by reason.
func (l *lake) checkDeadLetters(t *testing.T) {
	t.Helper()
	if len(l.dlq) != len(poisons) {
		t.Errorf("the dead-letter stream holds %d messages, want %d", len(l.dlq), len(poisons))
	}
	reasons := map[string]int{}
	for _, p := range poisons {
		reasons[p.reason]++
		m, ok := l.dlq[p.body]
		if !ok {
			t.Errorf("poison %s not dead-lettered", p.body)
			continue
		}
		h := m.Headers()
		reason, detail := h.Get(sinkworker.HeaderError), h.Get(sinkworker.HeaderErrorDetail)
		if reason != p.reason || !strings.HasPrefix(detail, p.detail) || detail == "" ||
			h.Get(sinkworker.HeaderSubject) != "iot.bad" || m.Subject() != dlqSubject {
			t.Errorf("poison %s dead-lettered on %s as %s=%q %s=%q (from %q), want %q, %q…",
				p.body, m.Subject(), sinkworker.HeaderError, reason, sinkworker.HeaderErrorDetail, detail,
				h.Get(sinkworker.HeaderSubject), p.reason, p.detail)
		}
	}
	for reason, n := range reasons {
		if got := counter(t, l.reg, "jetsink_events_terminated_total", "reason", reason); got != float64(n) {
			t.Errorf("jetsink_events_terminated_total{reason=%q} = %v, want %d", reason, got, n)
		}
	}
}

// hiveUnescape decodes %XX, the only escape in a Hive partition value.
// It is the test's own, so that the worker's escaping is checked against
// a decoder it does not share.
func hiveUnescape(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+3 > len(s) {
			return "", fmt.Errorf("%q: truncated escape at %d", s, i)
		}
		c, err := hex.DecodeString(s[i+1 : i+3])
		if err != nil {
			return "", fmt.Errorf("%q: bad escape at %d: %w", s, i, err)
		}
		b.WriteByte(c[0])
		i += 2
	}
	return b.String(), nil
}

// counter sums the series of a counter whose labels include labels.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !slices.ContainsFunc(m.GetLabel(), func(lp *dto.LabelPair) bool {
					return lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}) {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func testLogger() *slog.Logger {
	if os.Getenv("JETSINK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// sqlString quotes s as a SQL string literal.
func sqlString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func equal[T comparable](a, b *T) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

func str[T any](p *T) string {
	if p == nil {
		return "NULL"
	}
	return fmt.Sprint(*p)
}
