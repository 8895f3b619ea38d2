package sinkworker

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// decodeBoth decodes data with the fast path (decode) and with
// encoding/json alone (decodeStd), and fails the test when they disagree:
// on the row, on poison or not, or on the reason and detail of the poison.
//
// Both decoders read testClock, so that they agree on the window, which
// poison details name.
func decodeBoth(t testing.TB, data []byte) (Row, error) {
	t.Helper()
	d1, d2 := testDecoder(), testDecoder()
	var r1, r2 Row
	e1 := d1.decode(data, &r1)
	e2 := d2.decodeStd(data, &r2)
	switch {
	case (e1 == nil) != (e2 == nil):
		t.Fatalf("decode(%q): fast path says %v, encoding/json says %v", data, e1, e2)
	case e1 != nil:
		var p1, p2 *poisonError
		if !errors.As(e1, &p1) || !errors.As(e2, &p2) || *p1 != *p2 {
			t.Fatalf("decode(%q): fast path says %v, encoding/json says %v", data, e1, e2)
		}
	case r1 != r2:
		t.Fatalf("decode(%q):\n fast %+v\n std  %+v", data, r1, r2)
	}
	var r3 Row
	if d3 := testDecoder(); fastDecode(data, &r3, &d3.win) && e2 != nil {
		t.Fatalf("fastDecode accepted %q, which is poison: %v", data, e2)
	}
	return r1, e1
}

// testClock is the decoders' now in the differential tests: fixed, so that
// the corpus means the same on any day.
var testClock = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// testDecoder is a decoder with config.Default()'s window and testClock.
func testDecoder() decoder {
	var d decoder
	d.win.now = func() time.Time { return testClock }
	return d
}

// decodeCorpus is valid and poison envelopes, written to reach every branch
// of the fast path and of its way out to encoding/json.
var decodeCorpus = []string{
	`{"event_id":"e1","app_id":"shop","event":"page_view","timestamp":"2026-03-14T10:00:00.123456Z","user_id":"u1","anonymous_id":"a1","session_id":"s1","properties":{"path":"/p/1","n":1},"context":{"ip":"10.0.0.1"}}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000}`,
	` { "app_id" : "shop" , "event" : "x" , "timestamp" : 1700000000000 , "properties" : { "a" : [ 1 , 2.5e-3 , -0 , true , false , null , "s\"\\\/\b\f\n\r\t\u00e9" ] } } ` + "\n",
	`{"app_id":"shop","event":"x","timestamp":"2026-03-14T10:00:00+02:00","properties":null,"context":null,"user_id":null}`,
	`{"app_id":"shop","event":"x","timestamp":1.7e12}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000.5}`,
	`{"app_id":"shop","event":"x","timestamp":"2026-03-14T10:00:00\u005a"}`,
	`{"app_id":"shop","event":"x\u00e9","timestamp":1700000000000}`,
	`{"app_id":"shop","event":"é ü 日本","timestamp":1700000000000,"user_id":"ü"}`,
	"{\"app_id\":\"shop\",\"event\":\"\xff\",\"timestamp\":1700000000000}",
	"{\"app_id\":\"shop\",\"event\":\"x\",\"timestamp\":1700000000000,\"properties\":{\"k\":\"\xff\xfe\"}}",
	"{\"app_id\":\"shop\",\"event\":\"\xed\xa0\x80\",\"timestamp\":1700000000000}",
	`{"app_id":"shop","event":"x","timestamp":1700000000000,"app_id":"blog"}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000,"app_id":null}`,
	`{"App_ID":"shop","event":"x","timestamp":1700000000000}`,
	`{"app_id":"shop","EVENT":"x","Event":"y","timestamp":1700000000000}`,
	"{\"app_id\":\"shop\",\"event\":\"x\",\"timestamp\":1700000000000,\"\u212a\":1}",
	`{"app_\u0069d":"shop","event":"x","timestamp":1700000000000}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000,"extra":{"deep":[[[{"a":{}}]]]},"other":"v"}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000,"properties":{"a":1,"a":2}}`,
	`{"app_id":"shop","event":"x","timestamp":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000,"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
	// Epoch seconds, milliseconds and their boundary; the window (testClock
	// + 24h) and just outside it.
	`{"app_id":"shop","event":"x","timestamp":1700000000}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000.123456789}`,
	`{"app_id":"shop","event":"x","timestamp":1.7e9}`,
	`{"app_id":"shop","event":"x","timestamp":17000000000e-1}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000e3}`,
	`{"app_id":"shop","event":"x","timestamp":1.7000000000000E+12}`,
	`{"app_id":"shop","event":"x","timestamp":0.0}`,
	`{"app_id":"shop","event":"x","timestamp":-0}`,
	`{"app_id":"shop","event":"x","timestamp":99999999999.9999999}`,
	`{"app_id":"shop","event":"x","timestamp":100000000000}`,
	`{"app_id":"shop","event":"x","timestamp":1e-7}`,
	`{"app_id":"shop","event":"x","timestamp":1e1000000000}`,
	`{"app_id":"shop","event":"x","timestamp":1e-1000000000}`,
	`{"app_id":"shop","event":"x","timestamp":946684799}`,
	`{"app_id":"shop","event":"x","timestamp":946684800}`,
	`{"app_id":"shop","event":"x","timestamp":"1999-12-31T23:59:59.999999999Z"}`,
	`{"app_id":"shop","event":"x","timestamp":"2026-06-02T12:00:00Z"}`,
	`{"app_id":"shop","event":"x","timestamp":"2026-06-02T12:00:00.000000001Z"}`,
	`{"app_id":"shop","event":"x","timestamp":"9999-12-31T23:59:59Z"}`,
	`{"app_id":"shop","event":"x","timestamp":4102444800}`,
	// Invalid UTF-8 in properties and context (valid JSON: encoding/json
	// replaces it in strings).
	"{\"app_id\":\"shop\",\"event\":\"x\",\"timestamp\":1700000000000,\"context\":{\"\xc3\":\"a\xe2\x82\"},\"properties\":{\"k\":\"é\"}}",
	"{\"app_id\":\"shop\",\"event\":\"x\",\"timestamp\":1700000000000,\"properties\":{\"k\":[\"\xed\xa0\x80\", \"€\"]}}",
	// Poison.
	`{"app_id":"shop","event":"x","timestamp":`,
	`not json at all`,
	``,
	`null`,
	`[]`,
	`"str"`,
	`{}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000}x`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000}{}`,
	`{"app_id":"shop","event":"x","timestamp":01700000000000}`,
	`{"app_id":"shop","event":"x","timestamp":-}`,
	`{"app_id":"shop","event":"x","timestamp":1.}`,
	`{"app_id":"shop","event":"x","timestamp":1e}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000,}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000,"p":tru}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000,"p":"\x"}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000,"p":"\u12g4"}`,
	"{\"app_id\":\"shop\",\"event\":\"x\ty\",\"timestamp\":1700000000000}",
	`{"event":"x","timestamp":1700000000000}`,
	`{"app_id":"","event":"x","timestamp":1700000000000}`,
	`{"app_id":"a/b","event":"x","timestamp":1700000000000}`,
	`{"app_id":"..","event":"x","timestamp":1700000000000}`,
	`{"app_id":"` + strings.Repeat("a", 129) + `","event":"x","timestamp":1700000000000}`,
	`{"app_id":"shop","timestamp":1700000000000}`,
	`{"app_id":"shop","event":"","timestamp":1700000000000}`,
	`{"app_id":"shop","event":"x"}`,
	`{"app_id":"shop","event":"x","timestamp":null}`,
	`{"app_id":"shop","event":"x","timestamp":"yesterday"}`,
	`{"app_id":"shop","event":"x","timestamp":true}`,
	`{"app_id":"shop","event":"x","timestamp":{}}`,
	`{"app_id":"shop","event":"x","timestamp":-1}`,
	`{"app_id":"shop","event":"x","timestamp":1e300}`,
	`{"app_id":"shop","event":"x","timestamp":"1969-12-31T23:59:59Z"}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000,"properties":[1]}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000,"context":"s"}`,
	`{"app_id":7,"event":"x","timestamp":1700000000000}`,
	`{"app_id":"shop","event":["x"],"timestamp":1700000000000}`,
	`{"app_id":"shop","event":"x","timestamp":1700000000000,"user_id":5}`,
}

func TestDecodeCorpus(t *testing.T) {
	for _, body := range decodeCorpus {
		decodeBoth(t, []byte(body))
	}
}

// The fast path takes the events producers send: it must not quietly fall
// back to encoding/json for them.
func TestFastDecodeTakesCommonEvents(t *testing.T) {
	base := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		ev := testEvent{ID: fmt.Sprintf("ev-%06d", i), App: "shop", TS: base.Add(time.Duration(i) * time.Second)}
		body := ev.body(i)
		var row Row
		if d := testDecoder(); !fastDecode(body, &row, &d.win) {
			t.Fatalf("fast path declined %s", body)
		}
		want, err := decodeBoth(t, body)
		if err != nil {
			t.Fatal(err)
		}
		if row != want || row.EventID != ev.ID || row.AppID != "shop" || !row.Timestamp.Equal(ev.TS.Truncate(time.Millisecond)) && !row.Timestamp.Equal(ev.TS) {
			t.Fatalf("row %+v for %s", row, body)
		}
	}
	for _, i := range []int{0, 1, 2, 3, 4, 5, 6, 8, 18, 19, 22, 23, 24} {
		body := decodeCorpus[i]
		var row Row
		if d := testDecoder(); !fastDecode([]byte(body), &row, &d.win) {
			t.Errorf("fast path declined %s", body)
		}
	}
}

// mutate changes body in one of a few ways that reach JSON's corners.
func mutate(r *rand.Rand, body []byte) []byte {
	b := append([]byte(nil), body...)
	special := []byte(`{}[]":,\ -.0123456789eE+tfnulasrx` + "\t\n\x00\x1f\x7f\xc3\xa9\xff")
	n := 1 + r.IntN(3)
	for range n {
		if len(b) == 0 {
			b = append(b, special[r.IntN(len(special))])
			continue
		}
		i := r.IntN(len(b))
		switch r.IntN(6) {
		case 0: // replace a byte
			b[i] = special[r.IntN(len(special))]
		case 1: // insert a byte
			b = append(b[:i], append([]byte{special[r.IntN(len(special))]}, b[i:]...)...)
		case 2: // delete a byte
			b = append(b[:i], b[i+1:]...)
		case 3: // truncate
			b = b[:i]
		case 4: // repeat a slice (duplicate members, nesting)
			j := i + r.IntN(len(b)-i+1)
			b = append(b[:j], append(append([]byte(nil), b[i:j]...), b[j:]...)...)
		case 5: // change case
			if 'a' <= b[i] && b[i] <= 'z' {
				b[i] -= 'a' - 'A'
			}
		}
	}
	return b
}

// The fast path and encoding/json agree on valid and mutated events: the
// same rows, and the same poison with the same reason.
func TestDecodeDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	seeds := append([]string(nil), decodeCorpus...)
	base := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	for i := range 20 {
		seeds = append(seeds, string(testEvent{ID: fmt.Sprintf("ev-%d", i), App: "game-1", TS: base.Add(time.Duration(i) * time.Minute)}.body(i)))
	}
	n := 200000
	if testing.Short() {
		n = 20000
	}
	accepted := 0
	for range n {
		body := mutate(r, []byte(seeds[r.IntN(len(seeds))]))
		if _, err := decodeBoth(t, body); err == nil {
			accepted++
		}
	}
	// Enough of the mutants must stay valid for the comparison to mean
	// something on rows as well as on poison.
	if accepted < n/20 {
		t.Errorf("only %d of %d mutants were valid", accepted, n)
	}
}

func FuzzDecode(f *testing.F) {
	for _, body := range decodeCorpus {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		decodeBoth(t, data)
	})
}
