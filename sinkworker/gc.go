package sinkworker

import (
	"math"
	"os"
	"runtime/debug"
)

// gcHeadroom is what the Go runtime may hold beyond MaxBufferedBytes
// before the garbage collector works to stay under its memory limit:
// Parquet writers, upload buffers, the NATS client's buffers, stacks, and
// what the per-event estimate (eventSize) leaves out.
const gcHeadroom = 64 << 20

// limitMemory sets the Go runtime's soft memory limit from the buffer cap,
// unless GOMEMLIMIT is set, and returns a function restoring the previous
// one. With GOGC alone the heap may grow to twice what is live, and a
// worker holding its whole buffer cap peaked at the cap + 190 MiB of RSS
// (hack/bench, 300k events over 1,200 partitions, 16 flushers).
func limitMemory(maxBuffered int64) (restore func()) {
	if os.Getenv("GOMEMLIMIT") != "" || maxBuffered <= 0 || maxBuffered > math.MaxInt64-gcHeadroom {
		return func() {}
	}
	prev := debug.SetMemoryLimit(maxBuffered + gcHeadroom)
	return func() { debug.SetMemoryLimit(prev) }
}
