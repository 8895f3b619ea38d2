package sinkworker

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
	"unsafe"
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
	reasonInvalidTimestamp = "invalid_timestamp"
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
// scratch envelope is reused without locking.
type decoder struct {
	env envelope
}

// decode fills row from data, or returns a *poisonError.
//
// The common event (no escapes or non-ASCII in the string fields, no
// duplicate or case-folded names, valid) is decoded by fastDecode in one
// pass without allocating: row's strings alias data. Anything else, and
// every event that turns out to be poison, goes through decodeStd, so what
// is poison and why is decided by encoding/json exactly as before.
func (d *decoder) decode(data []byte, row *Row) error {
	if fastDecode(data, row) {
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
	ts, err := parseTimestamp(e.Timestamp)
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

// Event times outside these bounds are rejected: they are clock or unit
// mistakes (seconds sent as millis), and would land in absurd partitions.
var (
	minEventTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	maxEventTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// parseTimestamp accepts an RFC 3339 string or epoch milliseconds.
func parseTimestamp(raw json.RawMessage) (time.Time, error) {
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
		ts = t
	} else {
		ms, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			f, ferr := strconv.ParseFloat(string(raw), 64)
			if ferr != nil || f != f {
				return time.Time{}, poison(reasonInvalidTimestamp, "not epoch milliseconds: "+string(raw))
			}
			if f < -1e15 || f > 1e15 {
				return time.Time{}, poison(reasonInvalidTimestamp, "out of range: "+string(raw))
			}
			ts = time.UnixMicro(int64(f * 1000))
		} else {
			if ms < -1e15 || ms > 1e15 {
				return time.Time{}, poison(reasonInvalidTimestamp, "out of range: "+string(raw))
			}
			ts = time.UnixMilli(ms)
		}
	}
	ts = ts.UTC()
	if ts.Before(minEventTime) || ts.After(maxEventTime) {
		return time.Time{}, poison(reasonInvalidTimestamp, "out of range: "+ts.Format(time.RFC3339))
	}
	return ts, nil
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
	return string(raw), nil
}
