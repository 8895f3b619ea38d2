package sinkworker

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/parquet-go/parquet-go"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// Row is one event as written to Parquet: the envelope's fields plus where it
// came from. Optional strings that are empty are written as null.
type Row struct {
	EventID     string    `parquet:"event_id,optional"`
	AppID       string    `parquet:"app_id,dict"`
	Event       string    `parquet:"event,dict"`
	Timestamp   time.Time `parquet:"timestamp,timestamp(microsecond:utc)"`
	UserID      string    `parquet:"user_id,optional"`
	AnonymousID string    `parquet:"anonymous_id,optional"`
	SessionID   string    `parquet:"session_id,optional"`
	// Properties and Context are the JSON text of the objects, as plain
	// strings: parquet-go v0.32.0 panics writing optional JSON-annotated
	// columns, and every engine parses JSON from a string anyway.
	Properties string `parquet:"properties,optional"`
	Context    string `parquet:"context,optional"`
	Subject    string `parquet:"_subject,dict"`
	StreamSeq  int64  `parquet:"_stream_seq"`
	// ReceivedAt is when JetStream stored the message (not when this worker
	// read it), so a retried batch encodes to the very same file.
	ReceivedAt time.Time `parquet:"_received_at,timestamp(microsecond:utc)"`
}

// Reasons an event is poison. They label metrics, so the set is fixed.
const (
	reasonInvalidJSON      = "invalid_json"
	reasonInvalidField     = "invalid_field"
	reasonMissingAppID     = "missing_app_id"
	reasonInvalidAppID     = "invalid_app_id"
	reasonMissingEvent     = "missing_event"
	reasonMissingTimestamp = "missing_timestamp"
	// reasonInvalidTimestamp is a timestamp that is neither an RFC 3339
	// string nor a JSON number.
	reasonInvalidTimestamp = "invalid_timestamp"
	// reasonTimestampOutOfRange is a well-formed timestamp outside
	// [Config.EventTimeMin, now + Config.EventTimeMaxAhead].
	reasonTimestampOutOfRange = "timestamp_out_of_range"
	// reasonDeadLetterLoop marks a message that already carries our error
	// header: the dead-letter subject is inside the consumer's filter, and
	// publishing it again would loop forever.
	reasonDeadLetterLoop = "dead_letter_loop"
	// reasonMaxDeliveries marks an event whose upload failed on its last
	// allowed delivery; JetStream would drop it otherwise.
	reasonMaxDeliveries = "max_deliveries"
)

// poisonError says why an event can never be written.
type poisonError struct {
	reason string
	detail string
}

func (e *poisonError) Error() string {
	if e.detail == "" {
		return e.reason
	}
	return e.reason + ": " + e.detail
}

func poison(reason, detail string) error { return &poisonError{reason: reason, detail: detail} }

// envelope is the JSON shape producers send.
type envelope struct {
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

// maxAppIDLen bounds app_id, which becomes a path segment of every key.
const maxAppIDLen = 128

// decoder turns message bodies into Rows. Each fetcher owns one, so its
// scratch envelope and its event-time window are used without locking. Its
// zero value accepts config.Default()'s window; newDecoder takes a Config's.
type decoder struct {
	env envelope
	win eventWindow
	// declared is the declared-schema path's state; nil for the envelope.
	declared *declaredState
}

// newDecoder returns a decoder that accepts event times in cfg's window,
// of the envelope or, with a plan, of cfg's declared schema.
func newDecoder(cfg config.Config, plan *schemaPlan) decoder {
	d := decoder{win: eventWindow{min: cfg.EventTimeMin, maxAhead: cfg.EventTimeMaxAhead, set: true}}
	if plan != nil {
		d.declared = newDeclaredState(plan)
	}
	return d
}

// values is the last decoded event's value block (declared schemas only;
// nil for the envelope, whose Row is the event).
func (d *decoder) values() []parquet.Value {
	if d.declared == nil {
		return nil
	}
	return d.declared.vals
}

// defaultMinEventTime and defaultMaxAhead are config.Default()'s window,
// used by a decoder's zero value.
var defaultMinEventTime, defaultMaxAhead = func() (time.Time, time.Duration) {
	c := config.Default()
	return c.EventTimeMin, c.EventTimeMaxAhead
}()

// eventWindow is the range of event times accepted: [min, now + maxAhead].
//
// Reading the clock for every event would cost more than the rest of the
// timestamp's checks, so the upper bound is cached: max is now + maxAhead as
// of the last refresh. Time only moves on, so the cached bound is at most
// the true one: an event within it is within the window. An event beyond
// it refreshes the bound from the clock before being judged, and so does
// every refreshEvery'th event, so that a wall clock stepped back does not
// leave a stale, too-late bound in place for long.
type eventWindow struct {
	min      time.Time
	maxAhead time.Duration
	set      bool             // min and maxAhead were given; else the defaults
	now      func() time.Time // the clock; nil is time.Now (tests fix it)
	max      time.Time        // now + maxAhead, as of the last refresh
	n        int              // events judged since the last refresh
}

const refreshEvery = 1 << 14

// check returns nil if ts is in the window, else a timestamp_out_of_range
// poison naming ts and the window.
func (w *eventWindow) check(ts time.Time) error {
	w.n++
	if ts.After(w.max) || w.n >= refreshEvery {
		w.refresh()
	}
	if ts.Before(w.min) || ts.After(w.max) {
		return w.outOfRange(ts.Format(time.RFC3339Nano))
	}
	return nil
}

func (w *eventWindow) refresh() {
	if !w.set {
		w.min, w.maxAhead, w.set = defaultMinEventTime, defaultMaxAhead, true
	}
	now := time.Now
	if w.now != nil {
		now = w.now
	}
	w.max = now().Add(w.maxAhead)
	w.n = 0
}

// outOfRange is the poison for an event time (or an epoch number too large
// to be one) outside the window.
func (w *eventWindow) outOfRange(what string) error {
	if w.max.IsZero() { // never refreshed (a number too large to be a time)
		w.refresh()
	}
	return poison(reasonTimestampOutOfRange, what+" is outside the accepted window ["+
		w.min.UTC().Format(time.RFC3339)+", "+w.max.UTC().Format(time.RFC3339)+"] (EVENT_TIME_MIN, now + EVENT_TIME_MAX_AHEAD)")
}

// decodeDelivery decodes one delivery's body into row (and, declared, the
// value block) with its provenance: the subject, stream sequence and
// JetStream's arrival time.
func (d *decoder) decodeDelivery(data []byte, subject string, seq uint64, received time.Time, row *Row) error {
	if err := d.decode(data, row); err != nil {
		return err
	}
	row.Subject, row.StreamSeq, row.ReceivedAt = subject, int64(seq), received
	if st := d.declared; st != nil {
		st.setProvenance(subject, seq, received)
	}
	return nil
}

// decode fills row from data, or returns a *poisonError. With a declared
// schema, see decodeDeclared.
//
// The common event (no escapes or non-ASCII in the string fields, no
// duplicate or case-folded names, valid) is decoded by fastDecode in one
// pass without allocating: row's strings alias data. Anything else, and
// every event that turns out to be poison, goes through decodeStd, so what
// is poison and why is decided by encoding/json exactly as before.
func (d *decoder) decode(data []byte, row *Row) error {
	if d.declared != nil {
		return d.decodeDeclared(data, row)
	}
	if fastDecode(data, row, &d.win) {
		return nil
	}
	return d.decodeStd(data, row)
}

// decodeStd decodes with encoding/json: the reference for what is poison.
func (d *decoder) decodeStd(data []byte, row *Row) error {
	d.env = envelope{Timestamp: d.env.Timestamp[:0], Properties: d.env.Properties[:0], Context: d.env.Context[:0]}
	e := &d.env
	if err := json.Unmarshal(data, e); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return poison(reasonInvalidField, te.Field+" must be a "+te.Type.String())
		}
		return poison(reasonInvalidJSON, err.Error())
	}
	switch {
	case e.AppID == "":
		return poison(reasonMissingAppID, "")
	case !validAppID(e.AppID):
		return poison(reasonInvalidAppID, "app_id must be 1-128 of A-Z a-z 0-9 . _ -")
	case e.Event == "":
		return poison(reasonMissingEvent, "")
	}
	ts, err := d.win.parseTimestamp(e.Timestamp)
	if err != nil {
		return err
	}
	props, err := jsonObject("properties", e.Properties)
	if err != nil {
		return err
	}
	ctx, err := jsonObject("context", e.Context)
	if err != nil {
		return err
	}
	*row = Row{
		EventID: e.EventID, AppID: e.AppID, Event: e.Event, Timestamp: ts,
		UserID: e.UserID, AnonymousID: e.AnonymousID, SessionID: e.SessionID,
		Properties: props, Context: ctx,
	}
	return nil
}

// validAppID keeps app_id safe as a Hive partition value in an S3 key: no
// slashes, no '=', nothing a query engine would need to escape.
func validAppID(s string) bool {
	if len(s) > maxAppIDLen || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// parseTimestamp reads an event time and checks it against the window.
//
// A JSON string is RFC 3339 (with any fraction of a second). A JSON number
// is an epoch time whose unit is decided by its magnitude alone:
//
//   - |n| < 1e11: epoch seconds (1e11 s is the year 5138);
//   - |n| ≥ 1e11: epoch milliseconds (1e11 ms is 1973-03-03T09:46:40Z).
//
// Fractions are allowed in both and kept to the microsecond (truncated).
// Config.EventTimeMin is never before 1e11 ms (config.MinEventTimeFloor),
// so no number is a valid event time in both units and this rule cannot
// misread one: a number read in the wrong unit would have been out of the
// window either way.
//
// An unreadable value is invalid_timestamp; a readable one outside the
// window (or too large to be a time at all) is timestamp_out_of_range.
func (w *eventWindow) parseTimestamp(raw json.RawMessage) (time.Time, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, poison(reasonMissingTimestamp, "")
	}
	var ts time.Time
	if raw[0] == '"' {
		var s string
		if len(raw) >= 2 && raw[len(raw)-1] == '"' && bytes.IndexByte(raw, '\\') < 0 {
			// No escapes: parse the bytes in place. The string does not
			// outlive this call (time.Parse keeps no reference to it).
			s = unsafe.String(unsafe.SliceData(raw[1:]), len(raw)-2)
		} else {
			var err error
			if s, err = unquote(raw); err != nil {
				return time.Time{}, poison(reasonInvalidTimestamp, err.Error())
			}
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, poison(reasonInvalidTimestamp, "not RFC 3339: "+strings.Clone(s))
		}
		ts = t.UTC()
	} else {
		us, r := epochMicros(raw)
		switch r {
		case epochInvalid:
			return time.Time{}, poison(reasonInvalidTimestamp, "not an RFC 3339 string or an epoch number: "+string(raw))
		case epochTooLarge:
			return time.Time{}, w.outOfRange("epoch number " + string(raw))
		}
		ts = time.UnixMicro(us).UTC()
	}
	if err := w.check(ts); err != nil {
		return time.Time{}, err
	}
	return ts, nil
}

// Results of epochMicros besides a time.
const (
	epochOK = iota
	epochInvalid
	epochTooLarge // |µs| ≥ 1e18 (past the year 33000)
)

// epochSecondsBelow is where epoch numbers stop being seconds and start
// being milliseconds (see parseTimestamp).
const epochSecondsBelow = 1e11

// epochMicros reads a JSON number as an epoch time in microseconds, in
// seconds or milliseconds by its magnitude (see parseTimestamp). It is
// exact: the decimal digits are scaled, never rounded through a float, so
// 1700000000.123456 is 1700000000123456 µs, and digits past the microsecond
// are dropped (truncated toward zero).
func epochMicros(raw []byte) (int64, int) { return epochMicrosIn(raw, -1) }

// epochMicrosIn is epochMicros in a given unit: scale is the power of ten
// from the unit to microseconds (6 for seconds, 3 for milliseconds, 0 for
// microseconds), or -1 for the unit epochMicros infers from the magnitude.
func epochMicrosIn(raw []byte, scale int) (int64, int) {
	// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
	i := 0
	neg := i < len(raw) && raw[i] == '-'
	if neg {
		i++
	}
	intStart := i
	for i < len(raw) && '0' <= raw[i] && raw[i] <= '9' {
		i++
	}
	intPart := raw[intStart:i]
	if len(intPart) == 0 || len(intPart) > 1 && intPart[0] == '0' {
		return 0, epochInvalid
	}
	var frac []byte
	if i < len(raw) && raw[i] == '.' {
		i++
		fs := i
		for i < len(raw) && '0' <= raw[i] && raw[i] <= '9' {
			i++
		}
		if frac = raw[fs:i]; len(frac) == 0 {
			return 0, epochInvalid
		}
	}
	exp := 0
	if i < len(raw) && (raw[i] == 'e' || raw[i] == 'E') {
		i++
		eneg := false
		if i < len(raw) && (raw[i] == '+' || raw[i] == '-') {
			eneg = raw[i] == '-'
			i++
		}
		es := i
		for i < len(raw) && '0' <= raw[i] && raw[i] <= '9' {
			if exp < 1e6 { // beyond, the number is 0 or too large anyway
				exp = exp*10 + int(raw[i]-'0')
			}
			i++
		}
		if i == es {
			return 0, epochInvalid
		}
		if eneg {
			exp = -exp
		}
	}
	if i != len(raw) {
		return 0, epochInvalid
	}

	// The value is the digits intPart+frac, d[lead:trail+1] once zeros on
	// either end are dropped, times 10^e10.
	n := len(intPart) + len(frac)
	digit := func(k int) byte {
		if k < len(intPart) {
			return intPart[k]
		}
		return frac[k-len(intPart)]
	}
	lead := 0
	for lead < n && digit(lead) == '0' {
		lead++
	}
	if lead == n {
		return 0, epochOK // zero: 1970, which the window rejects
	}
	trail := n - 1
	for digit(trail) == '0' {
		trail--
	}
	nd := trail - lead + 1
	e10 := exp - len(frac) + (n - 1 - trail)
	// The value has nd+e10 digits before the point, so it is below 1e11
	// exactly when nd+e10 ≤ 11.
	if scale < 0 {
		scale = 3 // milliseconds to µs
		if nd+e10 <= 11 {
			scale = 6 // seconds to µs
		}
	}
	s := e10 + scale // µs = digits × 10^s, truncated
	if nd+s > 18 {
		return 0, epochTooLarge
	}
	var us int64
	for k := lead; k < lead+nd+s && k <= trail; k++ { // nd+s ≤ 0: under 1 µs
		us = us*10 + int64(digit(k)-'0')
	}
	for ; s > 0; s-- {
		us *= 10
	}
	if neg {
		us = -us
	}
	return us, epochOK
}

// unquote decodes a JSON string. Apart from parseTimestamp, so that its
// result escapes to the heap only when there is something to unescape.
func unquote(raw []byte) (string, error) {
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

// jsonObject returns an object field as its JSON text; absent or null is "".
func jsonObject(name string, raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] != '{' {
		return "", poison(reasonInvalidField, name+" must be an object")
	}
	return validUTF8(raw), nil
}

// validUTF8 returns raw as a string with each byte that is not part of
// valid UTF-8 replaced by U+FFFD, as encoding/json does when it decodes a
// string (one U+FFFD per byte utf8.DecodeRune rejects, unlike
// strings.ToValidUTF8, which merges a run into one). In valid JSON such
// bytes can only be inside strings, so the result is still the same JSON
// with valid strings, fit for a STRING column.
func validUTF8(raw []byte) string {
	if utf8.Valid(raw) {
		return string(raw)
	}
	b := make([]byte, 0, len(raw)+8)
	for len(raw) > 0 {
		r, size := utf8.DecodeRune(raw)
		if r == utf8.RuneError && size == 1 {
			b = utf8.AppendRune(b, utf8.RuneError)
		} else {
			b = append(b, raw[:size]...)
		}
		raw = raw[size:]
	}
	return string(b)
}
