package sinkworker

import (
	"bytes"
	"fmt"

	kzstd "github.com/klauspost/compress/zstd"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress"
	"github.com/parquet-go/parquet-go/compress/gzip"
	"github.com/parquet-go/parquet-go/compress/snappy"
	"github.com/parquet-go/parquet-go/compress/uncompressed"
	"github.com/parquet-go/parquet-go/compress/zstd"
	"github.com/parquet-go/parquet-go/format"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// encoder writes batches of Rows as Parquet files. It is safe for concurrent
// use: each flusher borrows a writer, because building a writer (schema,
// column buffers) costs more than small files do. Writers and zstd encoders
// are kept on free lists rather than in a sync.Pool: the garbage collector
// empties a sync.Pool at every cycle, which under load is several times a
// second, and a new zstd encoder allocates and clears megabytes of history
// and tables before its first page.
//
// The envelope's rows are written by a GenericWriter[Row]; a declared
// schema's value blocks by a Writer of the plan's schema.
type encoder struct {
	newWriter func() *parquet.GenericWriter[Row]
	writers   freeList[*parquet.GenericWriter[Row]]
	plan      *schemaPlan
	newValues func() *parquet.Writer
	values    freeList[*parquet.Writer]
}

// newEncoder returns an encoder for the given compression that keeps up to
// concurrency idle writers and encoders (the number of flushers). plan is
// the declared schema's, nil for the envelope.
func newEncoder(compression string, concurrency int, plan *schemaPlan) (*encoder, error) {
	var codec compress.Codec
	switch compression {
	case config.CompressionZstd:
		codec = newZstdCodec(zstd.SpeedDefault, concurrency)
	case config.CompressionSnappy:
		codec = &snappy.Codec{}
	case config.CompressionGzip:
		codec = &gzip.Codec{}
	case config.CompressionNone:
		codec = &uncompressed.Codec{}
	default:
		return nil, fmt.Errorf("unknown compression %q", compression)
	}
	e := &encoder{writers: newFreeList[*parquet.GenericWriter[Row]](concurrency), plan: plan}
	e.newWriter = func() *parquet.GenericWriter[Row] {
		return parquet.NewGenericWriter[Row](nil, parquet.Compression(codec))
	}
	if plan != nil {
		e.values = newFreeList[*parquet.Writer](concurrency)
		e.newValues = func() *parquet.Writer {
			return parquet.NewWriter(nil, plan.schema, parquet.Compression(codec))
		}
	}
	return e, nil
}

// encodeValues appends the Parquet file of a declared schema's value
// blocks (plan.width values per row, in file order) to buf.
func (e *encoder) encodeValues(buf *bytes.Buffer, vals []parquet.Value) error {
	w, ok := e.values.get()
	if !ok {
		w = e.newValues()
	}
	width := e.plan.width
	rows := make([]parquet.Row, len(vals)/width)
	for i := range rows {
		rows[i] = vals[i*width : (i+1)*width : (i+1)*width]
	}
	w.Reset(buf)
	if _, err := w.WriteRows(rows); err != nil {
		return fmt.Errorf("encode parquet: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("encode parquet: %w", err)
	}
	w.Reset(nil)
	e.values.put(w)
	return nil
}

// encode appends the Parquet file holding rows to buf.
func (e *encoder) encode(buf *bytes.Buffer, rows []Row) error {
	w, ok := e.writers.get()
	if !ok {
		w = e.newWriter()
	}
	w.Reset(buf)
	if _, err := w.Write(rows); err != nil {
		return fmt.Errorf("encode parquet: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("encode parquet: %w", err)
	}
	// Only a writer that finished cleanly goes back: its state is known.
	w.Reset(nil)
	e.writers.put(w)
	return nil
}

// freeList keeps up to a fixed number of idle values, across GC cycles.
type freeList[T any] struct{ c chan T }

func newFreeList[T any](n int) freeList[T] { return freeList[T]{c: make(chan T, max(n, 1))} }

func (f freeList[T]) get() (T, bool) {
	select {
	case v := <-f.c:
		return v, true
	default:
		var zero T
		return zero, false
	}
}

func (f freeList[T]) put(v T) {
	select {
	case f.c <- v:
	default:
	}
}

// zstdCodec is parquet-go's zstd codec (the same encoder options, so the
// same bytes) with its encoders on a free list instead of a sync.Pool.
type zstdCodec struct {
	zstd.Codec // String, CompressionCodec and Decode
	level      kzstd.EncoderLevel
	encoders   freeList[*kzstd.Encoder]
}

func newZstdCodec(level kzstd.EncoderLevel, concurrency int) *zstdCodec {
	return &zstdCodec{Codec: zstd.Codec{Level: level}, level: level, encoders: newFreeList[*kzstd.Encoder](concurrency)}
}

func (c *zstdCodec) CompressionCodec() format.CompressionCodec { return format.Zstd }

func (c *zstdCodec) Encode(dst, src []byte) ([]byte, error) {
	e, ok := c.encoders.get()
	if !ok {
		var err error
		e, err = kzstd.NewWriter(nil,
			kzstd.WithEncoderConcurrency(1),
			kzstd.WithEncoderLevel(c.level),
			kzstd.WithZeroFrames(true),
			kzstd.WithEncoderCRC(false),
		)
		if err != nil {
			return dst[:0], err
		}
	}
	defer c.encoders.put(e)
	return e.EncodeAll(src, dst[:0]), nil
}
