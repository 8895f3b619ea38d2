package sinkworker

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// eventBody is a valid envelope with the given JSON timestamp.
func eventBody(ts string) []byte {
	return []byte(`{"app_id":"shop","event":"x","timestamp":` + ts + `}`)
}

// reasonOf returns the poison reason of err, "" for nil.
func reasonOf(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var p *poisonError
	if !errors.As(err, &p) {
		t.Fatalf("not a poisonError: %v", err)
	}
	return p.reason
}

// Epoch seconds, epoch milliseconds and RFC 3339 strings decode to the same
// instant: the unit of a number is decided by its magnitude (< 1e11 is
// seconds), with fractions kept to the microsecond, truncated.
func TestDecodeTimestampUnits(t *testing.T) {
	// 2026-03-14T10:00:00Z and fractions of it.
	at := func(us int64) time.Time {
		return time.Unix(1773482400, 0).Add(time.Duration(us) * time.Microsecond).UTC()
	}
	cases := []struct {
		ts   string
		want time.Time
	}{
		{`"2026-03-14T10:00:00Z"`, at(0)},
		{`"2026-03-14T12:00:00+02:00"`, at(0)},
		{`1773482400`, at(0)},             // seconds
		{`1773482400000`, at(0)},          // milliseconds
		{`1773482400.0`, at(0)},           // seconds
		{`1.7734824e9`, at(0)},            // seconds, exponent
		{`1.7734824E12`, at(0)},           // milliseconds, exponent
		{`17734824000e-1`, at(0)},         // 1773482400 by its value, not its digits
		{`1773482400e3`, at(0)},           // milliseconds by its value
		{`1773482400.5`, at(500000)},      // fractional seconds
		{`1773482400.123456`, at(123456)}, // exact: not rounded through a float
		{`1773482400.000001`, at(1)},
		{`1773482400.1234569`, at(123456)}, // past the µs: truncated
		{`"2026-03-14T10:00:00.123456Z"`, at(123456)},
		{`1773482400123.456`, at(123456)},  // fractional milliseconds
		{`1773482400123.4569`, at(123456)}, // past the µs: truncated
		{`1773482400001`, at(1000)},
	}
	for _, c := range cases {
		for _, std := range []bool{false, true} {
			d := testDecoder()
			var row Row
			err := decodeWith(&d, std, eventBody(c.ts), &row)
			if err != nil {
				t.Errorf("timestamp %s (std %v): %v", c.ts, std, err)
				continue
			}
			if !row.Timestamp.Equal(c.want) || row.Timestamp.Location() != time.UTC {
				t.Errorf("timestamp %s (std %v) = %s, want %s", c.ts, std, row.Timestamp.Format(time.RFC3339Nano), c.want.Format(time.RFC3339Nano))
			}
		}
	}
}

func TestEpochMicros(t *testing.T) {
	cases := []struct {
		raw    string
		us     int64
		result int
	}{
		{"0", 0, epochOK},
		{"-0", 0, epochOK},
		{"0.0e5", 0, epochOK},
		{"1", 1e6, epochOK},
		{"-1.5", -1500000, epochOK},
		{"1e-6", 1, epochOK},
		{"1e-7", 0, epochOK},
		{"99999999999", 99999999999e6, epochOK},               // largest integer of seconds
		{"99999999999.999999999", 99999999999999999, epochOK}, // still seconds
		{"100000000000", 100000000000e3, epochOK},             // smallest of milliseconds
		{"-100000000000", -100000000000e3, epochOK},           // by absolute value
		{"-99999999999", -99999999999e6, epochOK},             // by absolute value
		{"999999999999999.999", 999999999999999999, epochOK},  // largest number of ms
		{"1000000000000000", 0, epochTooLarge},                // 1e18 µs
		{"1e300", 0, epochTooLarge},                           // would overflow
		{"1e99999999999999999999", 0, epochTooLarge},          // exponent overflow
		{"1e-99999999999999999999", 0, epochOK},               // underflow: 0
		{"0000", 0, epochInvalid},                             // leading zero
		{"01", 0, epochInvalid},
		{"1.", 0, epochInvalid},
		{".5", 0, epochInvalid},
		{"1e", 0, epochInvalid},
		{"1e+", 0, epochInvalid},
		{"-", 0, epochInvalid},
		{"", 0, epochInvalid},
		{"true", 0, epochInvalid},
		{"1x", 0, epochInvalid},
		{"+1", 0, epochInvalid},
	}
	for _, c := range cases {
		us, r := epochMicros([]byte(c.raw))
		if r != c.result || r == epochOK && us != c.us {
			t.Errorf("epochMicros(%q) = %d, %d; want %d, %d", c.raw, us, r, c.us, c.result)
		}
	}
}

// Event times are accepted in [EventTimeMin, now + EventTimeMaxAhead] and
// are timestamp_out_of_range outside it; unreadable ones stay
// invalid_timestamp.
func TestDecodeTimestampWindow(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	cfg := config.Default()
	cfg.EventTimeMin = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg.EventTimeMaxAhead = time.Hour
	minS, maxS := cfg.EventTimeMin.Unix(), now.Add(time.Hour).Unix()
	num := func(n int64) string { b, _ := json.Marshal(n); return string(b) }
	cases := []struct {
		ts, reason string
	}{
		{`"2020-01-01T00:00:00Z"`, ""}, // the minimum is in
		{num(minS), ""},
		{num(minS * 1000), ""},
		{`"2019-12-31T23:59:59.999999999Z"`, reasonTimestampOutOfRange},
		{num(minS - 1), reasonTimestampOutOfRange},
		{num(minS*1000 - 1), reasonTimestampOutOfRange},
		{`"2026-06-01T13:00:00Z"`, ""}, // now + max ahead is in
		{num(maxS), ""},
		{num(maxS * 1000), ""},
		{`"2026-06-01T13:00:00.000001Z"`, reasonTimestampOutOfRange},
		{num(maxS + 1), reasonTimestampOutOfRange},
		{num(maxS*1000 + 1), reasonTimestampOutOfRange},
		{`"9999-12-31T23:59:59Z"`, reasonTimestampOutOfRange}, // accepted before the window
		{`"1970-01-01T00:00:00Z"`, reasonTimestampOutOfRange},
		{`1700000`, reasonTimestampOutOfRange}, // seconds sent as ms... or ms sent as s: 1970 either way
		{`-1`, reasonTimestampOutOfRange},
		{`0`, reasonTimestampOutOfRange},
		{`1e300`, reasonTimestampOutOfRange},
		{`"yesterday"`, reasonInvalidTimestamp},
		{`"2026-06-01"`, reasonInvalidTimestamp},
		{`true`, reasonInvalidTimestamp},
		{`{}`, reasonInvalidTimestamp},
		{`null`, reasonMissingTimestamp},
	}
	for _, c := range cases {
		for _, std := range []bool{false, true} {
			d := newDecoder(cfg, nil)
			d.win.now = func() time.Time { return now }
			var row Row
			err := decodeWith(&d, std, eventBody(c.ts), &row)
			if got := reasonOf(t, err); got != c.reason {
				t.Errorf("timestamp %s (std %v): reason %q (%v), want %q", c.ts, std, got, err, c.reason)
				continue
			}
			if c.reason == reasonTimestampOutOfRange {
				// The detail names the window.
				if msg := err.Error(); !strings.Contains(msg, "[2020-01-01T00:00:00Z, 2026-06-01T13:00:00Z]") {
					t.Errorf("timestamp %s: detail %q does not name the window", c.ts, msg)
				}
			}
		}
	}
	// And a time is named.
	d := newDecoder(cfg, nil)
	d.win.now = func() time.Time { return now }
	var row Row
	if err := d.decode(eventBody(`"2030-01-01T00:00:00Z"`), &row); err == nil || !strings.Contains(err.Error(), "2030-01-01T00:00:00Z is outside") {
		t.Errorf("detail %v does not name the time", err)
	}
}

// A decoder's zero value has config.Default()'s window, and the cached
// upper bound follows the clock.
func TestDecodeTimestampWindowDefaultsAndClock(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	var d decoder
	d.win.now = func() time.Time { return now }
	var row Row
	check := func(ts, want string) {
		t.Helper()
		if got := reasonOf(t, d.decode(eventBody(ts), &row)); got != want {
			t.Errorf("timestamp %s: reason %q, want %q", ts, got, want)
		}
	}
	check(`"2000-01-01T00:00:00Z"`, "")
	check(`"1999-12-31T23:59:59Z"`, reasonTimestampOutOfRange)
	check(`"2026-06-02T12:00:00Z"`, "") // now + 24h
	check(`"2026-06-02T12:00:01Z"`, reasonTimestampOutOfRange)
	now = now.Add(time.Hour) // the cached bound is behind: refreshed
	check(`"2026-06-02T12:00:01Z"`, "")
	check(`"2026-06-02T13:00:01Z"`, reasonTimestampOutOfRange)
	// A clock stepped back is noticed within refreshEvery events.
	now = now.Add(-2 * time.Hour)
	for range refreshEvery {
		check(`"2026-06-01T00:00:00Z"`, "")
	}
	check(`"2026-06-02T12:00:00Z"`, reasonTimestampOutOfRange)
}

// Invalid UTF-8 in properties and context is replaced with U+FFFD, byte by
// byte, as encoding/json replaces it in the plain string fields; the text
// stays the same JSON.
func TestDecodeInvalidUTF8InObjects(t *testing.T) {
	body := []byte("{\"app_id\":\"shop\",\"event\":\"é\",\"timestamp\":1773482400," +
		"\"properties\":{\"k\xc3\":\"a\xe2\x82b\",\"ok\":\"é€\",\"s\":\"\xed\xa0\x80\"}," +
		"\"context\":{\"ip\":\"\xff\xfe\"}}")
	for _, std := range []bool{false, true} {
		d := testDecoder()
		var row Row
		err := decodeWith(&d, std, body, &row)
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"k` + "\uFFFD" + `":"a` + "\uFFFD\uFFFD" + `b","ok":"é€","s":"` + "\uFFFD\uFFFD\uFFFD" + `"}`; row.Properties != want {
			t.Errorf("properties %q, want %q", row.Properties, want)
		}
		if want := `{"ip":"` + "\uFFFD\uFFFD" + `"}`; row.Context != want {
			t.Errorf("context %q, want %q", row.Context, want)
		}
		for _, s := range []string{row.Properties, row.Context} {
			if !utf8.ValidString(s) || !json.Valid([]byte(s)) {
				t.Errorf("not valid UTF-8 JSON: %q", s)
			}
		}
		// The replacement is what encoding/json makes of the same strings.
		var props map[string]string
		if err := json.Unmarshal(body[strings.Index(string(body), `{"k`):strings.Index(string(body), `,"context"`)], &props); err != nil {
			t.Fatal(err)
		}
		var got map[string]string
		if err := json.Unmarshal([]byte(row.Properties), &got); err != nil {
			t.Fatal(err)
		}
		for k, v := range props {
			if got[k] != v {
				t.Errorf("properties[%q] = %q, encoding/json says %q", k, got[k], v)
			}
		}
	}
	// The fast path leaves such bodies to encoding/json, and still takes
	// valid non-ASCII.
	d := testDecoder()
	var row Row
	if fastDecode(body, &row, &d.win) {
		t.Error("fast path took invalid UTF-8 in properties")
	}
	ok := []byte(`{"app_id":"shop","event":"e","timestamp":1773482400,"properties":{"ké":"€"}}`)
	if !fastDecode(ok, &row, &d.win) || row.Properties != `{"ké":"€"}` {
		t.Errorf("fast path declined valid UTF-8 in properties, or got %q", row.Properties)
	}
}

// decodeWith decodes with encoding/json's path (std) or the fast one.
func decodeWith(d *decoder, std bool, body []byte, row *Row) error {
	if std {
		return d.decodeStd(body, row)
	}
	return d.decode(body, row)
}
