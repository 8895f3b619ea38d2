package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/jetsink/jetsink/hack/bench/eventgen"
	"github.com/jetsink/jetsink/sinkworker"
)

// The raw references: what one core does with the same events when it only
// decodes JSON, or only encodes Parquet. They are Go benchmarks run in this
// process (testing.Benchmark), one goroutine each, so they are per core.

// envelope mirrors the worker's decoding target (sinkworker's envelope).
type envelope struct {
	EventID     string          `json:"event_id"`
	AppID       string          `json:"app_id"`
	Event       string          `json:"event"`
	Timestamp   json.RawMessage `json:"timestamp"`
	UserID      string          `json:"user_id"`
	AnonymousID string          `json:"anonymous_id"`
	SessionID   string          `json:"session_id"`
	Properties  json.RawMessage `json:"properties"`
	Context     json.RawMessage `json:"context"`
}

// decodeRow is the worker's decode without its validation: encoding/json
// into the envelope, the RFC 3339 timestamp parsed, the row filled.
func decodeRow(data []byte, env *envelope, row *sinkworker.Row) error {
	*env = envelope{Timestamp: env.Timestamp[:0], Properties: env.Properties[:0], Context: env.Context[:0]}
	if err := json.Unmarshal(data, env); err != nil {
		return err
	}
	if len(env.Timestamp) < 2 {
		return errors.New("no timestamp")
	}
	ts, err := time.Parse(time.RFC3339Nano, string(env.Timestamp[1:len(env.Timestamp)-1]))
	if err != nil {
		return err
	}
	*row = sinkworker.Row{EventID: env.EventID, AppID: env.AppID, Event: env.Event, Timestamp: ts.UTC(),
		UserID: env.UserID, AnonymousID: env.AnonymousID, SessionID: env.SessionID,
		Properties: string(env.Properties), Context: string(env.Context)}
	return nil
}

// sample returns n events of the benchmark's generator, as bodies and rows.
func sample(seed uint64, perDay, n int) ([][]byte, []sinkworker.Row) {
	gen := eventgen.New(seed, perDay)
	bodies := make([][]byte, n)
	rows := make([]sinkworker.Row, n)
	var env envelope
	for i := range n {
		bodies[i] = gen.Next(nil).Body
		if err := decodeRow(bodies[i], &env, &rows[i]); err != nil {
			panic(err)
		}
		rows[i].Subject = eventgen.SubjectPrefix + rows[i].AppID
		rows[i].StreamSeq = int64(i + 1)
		rows[i].ReceivedAt = rows[i].Timestamp
	}
	return bodies, rows
}

type microResult struct {
	decodePerSec float64
	encodePerSec float64
	encodeRatio  float64 // Parquet bytes / JSON bytes
}

// rowsPerFile is the size of the files the encode benchmark writes: the
// worker's default BATCH_MAX_EVENTS.
const rowsPerFile = 10000

func runMicro(seed uint64, perDay int) microResult {
	bodies, rows := sample(seed, perDay, rowsPerFile)
	var res microResult
	dec := testing.Benchmark(func(b *testing.B) {
		var env envelope
		var row sinkworker.Row
		for i := 0; b.Loop(); i++ {
			if err := decodeRow(bodies[i%len(bodies)], &env, &row); err != nil {
				b.Fatal(err)
			}
		}
	})
	res.decodePerSec = float64(dec.N) / dec.T.Seconds()

	var jsonBytes int
	for _, b := range bodies {
		jsonBytes += len(b)
	}
	var fileBytes int
	enc := testing.Benchmark(func(b *testing.B) {
		var buf bytes.Buffer
		w := parquet.NewGenericWriter[sinkworker.Row](&buf, parquet.Compression(&zstd.Codec{Level: zstd.SpeedDefault}))
		for b.Loop() {
			buf.Reset()
			w.Reset(&buf)
			if _, err := w.Write(rows); err != nil {
				b.Fatal(err)
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			fileBytes = buf.Len()
		}
	})
	res.encodePerSec = float64(enc.N*len(rows)) / enc.T.Seconds()
	res.encodeRatio = float64(fileBytes) / float64(jsonBytes)
	return res
}
