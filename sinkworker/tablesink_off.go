//go:build !iceberg

package sinkworker

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// Iceberg tables (Config.Table) are built only with -tags iceberg, into
// the image's second worker binary, sinkworker-iceberg, which the operator
// runs for sinks with destination.table: iceberg-go's substrait package
// allocates 32 MB and takes 120 ms in its init, which would make every
// worker's resident memory 70 MiB instead of 19 MiB whether it writes a
// table or not. tablesink.go is the real stage.

type tableSink struct{ in chan *batch }

func (w *Worker) openTableRetrying(context.Context, jetstream.Consumer, *uploader) (*tableSink, error) {
	return nil, errors.New(`JETSINK_TABLE: this worker is built without Iceberg tables: run sinkworker-iceberg (go build -tags iceberg ./cmd/sinkworker)`)
}

func (t *tableSink) take(*batch) {}

func (t *tableSink) run(context.Context, context.Context, *uploader, *acker) {}
