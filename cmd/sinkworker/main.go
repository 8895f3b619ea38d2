// Command sinkworker moves events from a NATS JetStream consumer into S3 as
// Parquet. It is configured entirely by JETSINK_* environment variables (see
// package sinkworker/config) and drains on SIGTERM or SIGINT.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/jetsink/jetsink/sinkworker"
	"github.com/jetsink/jetsink/sinkworker/config"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sinkworker: invalid configuration:\n%v\n", err)
		exit(2, "invalid configuration: "+err.Error())
	}
	w, err := sinkworker.New(cfg, sinkworker.Options{Logger: log})
	if err != nil {
		fmt.Fprintf(os.Stderr, "sinkworker: %v\n", err)
		exit(2, err.Error())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := w.Run(ctx); err != nil {
		log.Error("Sink worker failed", "error", err)
		stop()
		exit(1, err.Error())
	}
}

// terminationLog is where the kubelet reads a container's termination
// message (the default terminationMessagePath); the operator shows it in
// status.lastWorkerFailure.message, so a sink says why its workers stop
// (a table it cannot write, a refused configuration) without kubectl logs.
const terminationLog = "/dev/termination-log"

func exit(code int, why string) {
	// Only where the kubelet made the file: never create one elsewhere.
	if f, err := os.OpenFile(terminationLog, os.O_WRONLY|os.O_TRUNC, 0); err == nil {
		const max = 4096 // the kubelet keeps at most 4096 bytes
		if len(why) > max {
			why = why[:max]
		}
		f.WriteString(why)
		f.Close()
	}
	os.Exit(code)
}
