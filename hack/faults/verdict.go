package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// result is one row of the matrix. Every count comes from reading the
// bucket and the DLQ stream back, by event id.
type result struct {
	name      string
	published int // good events JetStream acknowledged
	poison    int // poison events JetStream acknowledged
	objects   int
	rows      int // rows in every object, copies included
	lost      int // good events in no object
	dup       int // rows beyond the first of an event
	foreign   int // rows whose event was never published as good (poison written, or unknown)
	dlq       int // messages in the DLQ stream
	poisonOut int // poison events missing from the DLQ stream
	goodInDLQ int // good events dead-lettered
	pass      bool
	failures  []string // why it failed
	notes     []string
	metrics   map[string]float64 // the worker's, before SIGTERM: diagnosis only
	problems  []string           // the worker's WARN/ERROR messages: diagnosis only
	took      time.Duration
	err       error // the case could not run to its end
}

func (r *result) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}
func (r *result) fail(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

// complete reports whether every acknowledged good event is in an object
// and every poison event in the DLQ stream: the point from which waiting
// longer can only add duplicates.
func (s *stack) complete(ctx context.Context) bool {
	good, poison := s.pub.ids()
	ids, _, _, err := s.lake.rows(ctx)
	if err != nil {
		return false
	}
	for _, id := range good {
		if ids[id] == 0 {
			return false
		}
	}
	if len(poison) == 0 {
		return true
	}
	dlq, err := deadLettered(ctx, s.js, dlqStream)
	if err != nil {
		return false
	}
	in := map[string]bool{}
	for _, m := range dlq {
		in[m.id] = true
	}
	for _, id := range poison {
		if !in[id] {
			return false
		}
	}
	return true
}

// settle waits, up to limit, until the bucket and the DLQ are complete; it
// returns how long that took and whether it happened.
func (s *stack) settle(ctx context.Context, limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	deadline := start.Add(limit)
	for {
		if s.complete(ctx) {
			return time.Since(start), true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Since(start), false
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// judge reads everything back and fills r's counts and verdict.
func (s *stack) judge(ctx context.Context, c *faultCase, r *result) error {
	good, poison := s.pub.ids()
	r.published, r.poison = len(good), len(poison)
	ids, objects, rows, err := s.lake.rows(ctx)
	if err != nil {
		return err
	}
	r.objects, r.rows = objects, rows
	isGood := make(map[string]bool, len(good))
	for _, id := range good {
		isGood[id] = true
		switch n := ids[id]; {
		case n == 0:
			r.lost++
		case n > 1:
			r.dup += n - 1
		}
	}
	for id, n := range ids {
		if !isGood[id] {
			r.foreign += n
		}
	}
	dlq, err := deadLettered(ctx, s.js, dlqStream)
	if err != nil {
		return err
	}
	r.dlq = len(dlq)
	inDLQ := map[string]int{}
	for _, m := range dlq {
		inDLQ[m.id]++
		if isGood[m.id] {
			r.goodInDLQ++
		}
	}
	for _, id := range poison {
		if inDLQ[id] == 0 {
			r.poisonOut++
		}
	}

	if r.lost > 0 {
		r.fail("%d good events lost (%s)", r.lost, sample(good, func(id string) bool { return ids[id] == 0 }))
	}
	if r.foreign > 0 {
		r.fail("%d rows of events never published as good", r.foreign)
	}
	if r.goodInDLQ > 0 {
		r.fail("%d good events dead-lettered", r.goodInDLQ)
	}
	if r.poisonOut > 0 {
		r.fail("%d of %d poison events not in the DLQ stream (%s)", r.poisonOut, r.poison,
			sample(poison, func(id string) bool { return inDLQ[id] == 0 }))
	}
	if r.dup > 0 && !c.allowDup {
		r.fail("%d duplicate rows where every write's outcome was known to the worker", r.dup)
	}
	return nil
}

// sample lists up to three ids matching keep, for a failure's message.
func sample(ids []string, keep func(string) bool) string {
	var out []string
	for _, id := range ids {
		if keep(id) {
			out = append(out, id)
			if len(out) == 3 {
				out = append(out, "...")
				break
			}
		}
	}
	return "e.g. " + strings.Join(out, ", ")
}
