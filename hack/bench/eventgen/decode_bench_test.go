package eventgen

import (
	"encoding/json"
	"testing"
)

// envelopeV1 is the sink worker's decoding target, for comparing JSON
// decoders on generated events: go test -bench Decode ./hack/bench/eventgen
// (and with GOEXPERIMENT=jsonv2 for encoding/json/v2).
type envelopeV1 struct {
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

func bodies(n int) [][]byte {
	g := New(1, 1_000_000)
	out := make([][]byte, n)
	for i := range out {
		out[i] = g.Next(nil).Body
	}
	return out
}

func BenchmarkDecodeJSONv1(b *testing.B) {
	in := bodies(4096)
	var env envelopeV1
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		env = envelopeV1{}
		if err := json.Unmarshal(in[i%len(in)], &env); err != nil {
			b.Fatal(err)
		}
	}
}
