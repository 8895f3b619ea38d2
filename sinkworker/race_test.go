//go:build race

package sinkworker

// raceEnabled: timings under the race detector say nothing about the worker.
const raceEnabled = true
