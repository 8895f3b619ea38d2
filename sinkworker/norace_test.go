//go:build !race

package sinkworker

const raceEnabled = false
