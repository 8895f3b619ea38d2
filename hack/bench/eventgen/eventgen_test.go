package eventgen

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestDeterministicAndRealistic(t *testing.T) {
	const n = 20000
	a, b := New(42, n), New(42, n)
	apps := map[string]int{}
	names := map[string]bool{}
	total := 0
	var first, last time.Time
	for i := range n {
		ea, eb := a.Next(nil), b.Next(nil)
		if !bytes.Equal(ea.Body, eb.Body) {
			t.Fatalf("event %d differs between two generators with one seed:\n%s\n%s", i, ea.Body, eb.Body)
		}
		var env struct {
			EventID    string         `json:"event_id"`
			AppID      string         `json:"app_id"`
			Event      string         `json:"event"`
			Timestamp  time.Time      `json:"timestamp"`
			UserID     string         `json:"user_id"`
			SessionID  string         `json:"session_id"`
			Properties map[string]any `json:"properties"`
			Context    map[string]any `json:"context"`
		}
		if err := json.Unmarshal(ea.Body, &env); err != nil {
			t.Fatalf("event %d is not valid JSON: %v\n%s", i, err, ea.Body)
		}
		if env.AppID != ea.AppID || !env.Timestamp.Equal(ea.Time) || env.EventID == "" || env.Event == "" ||
			env.UserID == "" || env.SessionID == "" || len(env.Properties) == 0 || len(env.Context) == 0 {
			t.Fatalf("event %d lacks a field: %s", i, ea.Body)
		}
		apps[env.AppID]++
		names[env.Event] = true
		total += len(ea.Body)
		if i == 0 {
			first = ea.Time
		}
		last = ea.Time
	}
	if avg := total / n; avg < 270 || avg > 330 {
		t.Errorf("average body is %d bytes, want about 300", avg)
	}
	if len(apps) < 45 || len(names) != EventNames {
		t.Errorf("saw %d apps and %d event names, want about %d and %d", len(apps), len(names), Apps, EventNames)
	}
	if span := last.Sub(first); span < 23*time.Hour || span > 25*time.Hour {
		t.Errorf("timestamps span %s, want one day", span)
	}
	if c := New(43, n).Next(nil); bytes.Equal(c.Body, New(42, n).Next(nil).Body) {
		t.Error("different seeds gave the same first event")
	}
}
