package sinkworker

import (
	"bytes"
	"testing"
	"time"
)

// BenchmarkDecode is the fetchers' per-event JSON cost.
func BenchmarkDecode(b *testing.B) {
	body := testEvent{ID: "ev-000001", App: "shop", TS: time.Now()}.body(0)
	var d decoder
	var row Row
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.decode(body, &row); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode is the flushers' per-row Parquet cost (zstd).
func BenchmarkEncode(b *testing.B) {
	enc, err := newEncoder("zstd")
	if err != nil {
		b.Fatal(err)
	}
	var d decoder
	rows := make([]Row, 10000)
	base := time.Now()
	for i := range rows {
		ev := testEvent{ID: "ev-" + string(rune('a'+i%26)), App: "shop", TS: base.Add(time.Duration(i) * time.Millisecond)}
		if err := d.decode(ev.body(i), &rows[i]); err != nil {
			b.Fatal(err)
		}
		rows[i].Subject, rows[i].StreamSeq, rows[i].ReceivedAt = "events.shop", int64(i), base
	}
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := enc.encode(&buf, rows); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(rows))/b.Elapsed().Seconds(), "rows/s")
}
