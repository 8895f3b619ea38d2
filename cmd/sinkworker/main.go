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
		os.Exit(2)
	}
	w, err := sinkworker.New(cfg, sinkworker.Options{Logger: log})
	if err != nil {
		fmt.Fprintf(os.Stderr, "sinkworker: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := w.Run(ctx); err != nil {
		log.Error("Sink worker failed", "error", err)
		os.Exit(1)
	}
}
