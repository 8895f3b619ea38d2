package sinkworker

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress"
	"github.com/parquet-go/parquet-go/compress/gzip"
	"github.com/parquet-go/parquet-go/compress/snappy"
	"github.com/parquet-go/parquet-go/compress/uncompressed"
	"github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// encoder writes batches of Rows as Parquet files. It is safe for concurrent
// use: each flusher borrows a writer from the pool, because building a
// writer (schema, column buffers) costs more than small files do.
type encoder struct {
	writers sync.Pool
}

func newEncoder(compression string) (*encoder, error) {
	var codec compress.Codec
	switch compression {
	case config.CompressionZstd:
		codec = &zstd.Codec{Level: zstd.SpeedDefault}
	case config.CompressionSnappy:
		codec = &snappy.Codec{}
	case config.CompressionGzip:
		codec = &gzip.Codec{}
	case config.CompressionNone:
		codec = &uncompressed.Codec{}
	default:
		return nil, fmt.Errorf("unknown compression %q", compression)
	}
	e := &encoder{}
	e.writers.New = func() any {
		return parquet.NewGenericWriter[Row](nil, parquet.Compression(codec))
	}
	return e, nil
}

// encode appends the Parquet file holding rows to buf.
func (e *encoder) encode(buf *bytes.Buffer, rows []Row) error {
	w := e.writers.Get().(*parquet.GenericWriter[Row])
	w.Reset(buf)
	if _, err := w.Write(rows); err != nil {
		return fmt.Errorf("encode parquet: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("encode parquet: %w", err)
	}
	// Only a writer that finished cleanly goes back: its state is known.
	w.Reset(nil)
	e.writers.Put(w)
	return nil
}
