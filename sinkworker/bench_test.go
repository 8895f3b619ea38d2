package sinkworker

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// reportCPU adds cpu-ns/op: the process's CPU time per operation, which a
// shared, noisy machine disturbs far less than the wall time of ns/op.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkDecode is the fetchers' per-event JSON cost.
func BenchmarkDecode(b *testing.B) { benchDecode(b, (*decoder).decode) }

// BenchmarkDecodeStd is the same with encoding/json alone (the fallback,
// and the decoder before the fast path).
func BenchmarkDecodeStd(b *testing.B) { benchDecode(b, (*decoder).decodeStd) }

func benchDecode(b *testing.B, decode func(*decoder, []byte, *Row) error) {
	body := testEvent{ID: "ev-000001", App: "shop", TS: time.Now()}.body(0)
	var d decoder
	var row Row
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	cpu := processCPU()
	for b.Loop() {
		if err := decode(&d, body, &row); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
}

// BenchmarkEncode is the flushers' per-row Parquet cost (zstd).
func BenchmarkEncode(b *testing.B) {
	enc, err := newEncoder("zstd", 1, nil)
	if err != nil {
		b.Fatal(err)
	}
	rows := benchRows(b, 10000)
	var buf bytes.Buffer
	b.ReportAllocs()
	cpu := processCPU()
	for b.Loop() {
		buf.Reset()
		if err := enc.encode(&buf, rows); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
	b.ReportMetric(float64(b.N*len(rows))/b.Elapsed().Seconds(), "rows/s")
}

// benchRows is n decoded events of one partition, as a flusher encodes them.
func benchRows(b *testing.B, n int) []Row {
	var d decoder
	rows := make([]Row, n)
	base := time.Now()
	for i := range rows {
		ev := testEvent{ID: "ev-" + string(rune('a'+i%26)), App: "shop", TS: base.Add(time.Duration(i) * time.Millisecond)}
		if err := d.decode(ev.body(i), &rows[i]); err != nil {
			b.Fatal(err)
		}
		rows[i].Subject, rows[i].StreamSeq, rows[i].ReceivedAt = "events.shop", int64(i), base
	}
	return rows
}

// BenchmarkEncodeAfterGC is BenchmarkEncode with a GC cycle before every
// file, as in a busy worker, where one runs several times a second: what a
// sync.Pool would have dropped must be rebuilt.
func BenchmarkEncodeAfterGC(b *testing.B) {
	enc, err := newEncoder("zstd", 1, nil)
	if err != nil {
		b.Fatal(err)
	}
	rows := benchRows(b, 1000)
	var buf bytes.Buffer
	b.ReportAllocs()
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		b.StartTimer()
		start := processCPU()
		buf.Reset()
		if err := enc.encode(&buf, rows); err != nil {
			b.Fatal(err)
		}
		cpu += processCPU() - start
	}
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
}

// BenchmarkBatcherAdd is the fetchers' per-event cost in the batcher:
// events of 6 partitions into batches of 10,000, taken and released as the
// flushers do.
func BenchmarkBatcherAdd(b *testing.B) {
	cfg := config.Default()
	cfg.MaxBufferedBytes = 1 << 40
	b.ReportAllocs()
	m := newMetrics(prometheus.NewRegistry(), nil, cfg.MaxBufferedBytes, false)
	bt := newBatcher(cfg, nil, m)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			x, ok := bt.next()
			if !ok {
				return
			}
			bt.release(x)
		}
	}()
	var d decoder
	base := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	rows := make([]Row, 6)
	for i := range rows {
		ev := testEvent{ID: "ev-1", App: []string{"shop", "blog", "game"}[i%3], TS: base.Add(time.Duration(i%2) * time.Hour)}
		if err := d.decode(ev.body(i), &rows[i]); err != nil {
			b.Fatal(err)
		}
	}
	now := time.Now()
	i := 0
	cpu := processCPU()
	for b.Loop() {
		bt.add(&rows[i%len(rows)], trackedMsg{seq: uint64(i)}, 500, now)
		i++
	}
	reportCPU(b, cpu)
	bt.close()
	<-done
}

// benchSchema is hack/bench's declared schema of 10 columns over the
// envelope's events: the declared path's cost on the same bodies.
func benchSchema() *config.Schema {
	col := func(name, path, typ string) config.Column { return config.Column{Name: name, Path: path, Type: typ} }
	return &config.Schema{
		Columns: []config.Column{
			col("event_id", "", config.TypeString), col("app_id", "", config.TypeString),
			col("event", "", config.TypeString), col("timestamp", "", config.TypeTimestamp),
			col("user_id", "", config.TypeString), col("session_id", "", config.TypeString),
			col("path", "properties.path", config.TypeString), col("n", "properties.n", config.TypeInt64),
			col("ip", "context.ip", config.TypeString), col("properties", "", config.TypeJSON),
		},
		Time:        "timestamp",
		PartitionBy: []string{"app_id"},
	}
}

// BenchmarkDecodeDeclared is BenchmarkDecode's event through benchSchema.
func BenchmarkDecodeDeclared(b *testing.B) {
	d, _ := declaredDecoder(b, benchSchema())
	body := testEvent{ID: "ev-000001", App: "shop", TS: time.Now()}.body(0)
	var row Row
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	cpu := processCPU()
	for b.Loop() {
		if err := d.decode(body, &row); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
}

// BenchmarkEncodeDeclared is BenchmarkEncode's rows through benchSchema.
func BenchmarkEncodeDeclared(b *testing.B) {
	d, plan := declaredDecoder(b, benchSchema())
	enc, err := newEncoder("zstd", 1, plan)
	if err != nil {
		b.Fatal(err)
	}
	const n = 10000
	vals := make([]parquet.Value, 0, n*plan.width)
	base := time.Now()
	for i := range n {
		ev := testEvent{ID: "ev-" + string(rune('a'+i%26)), App: "shop", TS: base.Add(time.Duration(i) * time.Millisecond)}
		var row Row
		// Even events: benchSchema reads RFC 3339 timestamps.
		if err := d.decode(ev.body(2*i), &row); err != nil {
			b.Fatal(err)
		}
		d.declared.setProvenance("events.shop", uint64(i), base)
		vals = append(vals, d.values()...)
	}
	var buf bytes.Buffer
	b.ReportAllocs()
	cpu := processCPU()
	for b.Loop() {
		buf.Reset()
		if err := enc.encodeValues(&buf, vals); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "rows/s")
}
