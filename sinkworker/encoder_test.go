package sinkworker

import (
	"bytes"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
)

// The encoder's zstd codec writes the very same files as parquet-go's own,
// through new and reused zstd encoders alike.
func TestZstdCodecMatchesParquetGo(t *testing.T) {
	var d decoder
	base := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	for _, n := range []int{1, 700, 5000} {
		enc, err := newEncoder("zstd", 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		rows := make([]Row, n)
		for i := range rows {
			ev := testEvent{ID: "ev-" + string(rune('a'+i%26)), App: "shop", TS: base.Add(time.Duration(i) * time.Millisecond)}
			if err := d.decode(ev.body(i), &rows[i]); err != nil {
				t.Fatal(err)
			}
			rows[i].Subject, rows[i].StreamSeq, rows[i].ReceivedAt = "events.shop", int64(i), base
		}
		// parquet-go's writer, reused as the encoder reuses it (a reused
		// writer writes a slightly different file than a new one).
		w := parquet.NewGenericWriter[Row](nil, parquet.Compression(&zstd.Codec{Level: zstd.SpeedDefault}))
		var want bytes.Buffer
		for i := range 3 {
			want.Reset()
			w.Reset(&want)
			if _, err := w.Write(rows); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := enc.encode(&got, rows); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Fatalf("%d rows, file %d: %d bytes, parquet-go's zstd codec writes %d different ones", n, i, got.Len(), want.Len())
			}
		}
		back, err := parquet.Read[Row](bytes.NewReader(want.Bytes()), int64(want.Len()))
		if err != nil || len(back) != n || back[n-1] != rows[n-1] {
			t.Fatalf("read back %d rows, %v", len(back), err)
		}
	}
}
