package sinkworker

import (
	"bytes"
	"unicode/utf8"
	"unsafe"
)

// This file is the envelope decoder's fast path: a single pass over the
// body that validates it as JSON (with encoding/json's rules: strings may
// hold any byte but control characters, numbers follow the JSON grammar)
// and picks out the envelope's fields. It declines (returns false) whenever
// its answer could differ from encoding/json's, or the event is poison, and
// the caller then decodes with encoding/json. So it only has to be right
// about what it accepts, which the differential tests in
// fastjson_test.go check.

// Envelope fields, as bits of the seen set.
const (
	fEventID = 1 << iota
	fAppID
	fEvent
	fTimestamp
	fUserID
	fAnonymousID
	fSessionID
	fProperties
	fContext
)

// envelopeNames are the JSON names of the envelope, for the case-folded
// match encoding/json also accepts (fastDecode declines those).
var envelopeNames = []string{"event_id", "app_id", "event", "timestamp", "user_id", "anonymous_id", "session_id", "properties", "context"}

// maxFastDepth bounds nesting on the fast path; deeper bodies (legal up to
// encoding/json's 10000) go the slow way.
const maxFastDepth = 64

// fastDecode fills row from data and reports true, or reports false
// without a verdict. Strings in row alias data, which must not change
// while row is in use: a JetStream message's data is its own copy of the
// payload, never written to, and it is held until the row is written
// anyway, so a second copy would only double what a batch holds.
//
// win is the decoder's window of event times: an event outside it is
// poison, which is declined like all poison.
func fastDecode(data []byte, row *Row, win *eventWindow) bool {
	p := fastParser{data: data, maxDepth: maxFastDepth}
	// Spans of the fields in data: [start, end).
	var span [9][2]int
	seen := 0
	p.ws()
	if !p.eat('{') {
		return false
	}
	p.ws()
	if !p.eat('}') {
		for {
			p.ws()
			ks, ke, ok := p.key()
			if !ok {
				return false
			}
			p.ws()
			if !p.eat(':') {
				return false
			}
			p.ws()
			f := fieldOf(data[ks:ke])
			if f < 0 {
				return false // a case-folded envelope name
			}
			if f > 0 && seen&f != 0 {
				return false // a duplicate: encoding/json's last-wins, type errors and all
			}
			seen |= f
			vs := p.i
			switch f {
			case fEventID, fAppID, fEvent, fUserID, fAnonymousID, fSessionID:
				if !p.plainString() {
					return false
				}
			default:
				p.nonASCII = false
				if !p.value(0) {
					return false
				}
				// encoding/json replaces invalid UTF-8 in the string
				// fields; decodeStd does so in properties and context
				// too. Left to it: rare, and it allocates.
				if p.nonASCII && (f == fProperties || f == fContext) && !utf8.Valid(data[vs:p.i]) {
					return false
				}
			}
			if f > 0 {
				span[bitIndex(f)] = [2]int{vs, p.i}
			}
			p.ws()
			if p.eat('}') {
				break
			}
			if !p.eat(',') {
				return false
			}
		}
	}
	p.ws()
	if p.i != len(data) {
		return false
	}

	// Only the common valid event from here on: the rest is left to the
	// slow path, which names the poison. Every string field is a part of
	// the body itself (see above).
	body := unsafe.String(unsafe.SliceData(data), len(data))
	text := func(f int) string {
		if seen&f == 0 {
			return ""
		}
		sp := span[bitIndex(f)]
		if data[sp[0]] == '"' {
			return body[sp[0]+1 : sp[1]-1]
		}
		if data[sp[0]] == 'n' { // null
			return ""
		}
		return body[sp[0]:sp[1]]
	}
	raw := func(f int) []byte {
		if seen&f == 0 {
			return nil
		}
		sp := span[bitIndex(f)]
		return data[sp[0]:sp[1]]
	}
	app, event := text(fAppID), text(fEvent)
	if app == "" || !validAppID(app) || event == "" {
		return false
	}
	ts, err := win.parseTimestamp(raw(fTimestamp))
	if err != nil {
		return false
	}
	// properties and context: an object or null (else a type error).
	for _, f := range []int{fProperties, fContext} {
		if v := raw(f); len(v) > 0 && v[0] != '{' && v[0] != 'n' {
			return false
		}
	}
	*row = Row{
		EventID:     text(fEventID),
		AppID:       app,
		Event:       event,
		Timestamp:   ts,
		UserID:      text(fUserID),
		AnonymousID: text(fAnonymousID),
		SessionID:   text(fSessionID),
		Properties:  text(fProperties),
		Context:     text(fContext),
	}
	return true
}

func bitIndex(f int) int {
	n := 0
	for f > 1 {
		f >>= 1
		n++
	}
	return n
}

// fieldOf returns the field bit of an exact envelope name, 0 for another
// name, and -1 for a name encoding/json would match case-insensitively.
func fieldOf(name []byte) int {
	switch string(name) {
	case "event_id":
		return fEventID
	case "app_id":
		return fAppID
	case "event":
		return fEvent
	case "timestamp":
		return fTimestamp
	case "user_id":
		return fUserID
	case "anonymous_id":
		return fAnonymousID
	case "session_id":
		return fSessionID
	case "properties":
		return fProperties
	case "context":
		return fContext
	}
	for _, n := range envelopeNames {
		if len(n) == len(name) && asciiEqualFold(n, name) {
			return -1
		}
	}
	return 0
}

// asciiEqualFold compares an ASCII name with an ASCII key (key() only
// returns ASCII keys).
func asciiEqualFold(a string, b []byte) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

type fastParser struct {
	data []byte
	i    int
	// maxDepth bounds the nesting value accepts.
	maxDepth int
	// nonASCII is set by string when it skips a byte ≥ 0x80, which may be
	// invalid UTF-8.
	nonASCII bool
}

func (p *fastParser) ws() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *fastParser) eat(c byte) bool {
	if p.i < len(p.data) && p.data[p.i] == c {
		p.i++
		return true
	}
	return false
}

// key reads an object name made only of printable ASCII without escapes
// (others may be case-folded or unescaped by encoding/json: declined), and
// returns its bytes without the quotes.
func (p *fastParser) key() (int, int, bool) {
	if !p.eat('"') {
		return 0, 0, false
	}
	start := p.i
	for p.i < len(p.data) {
		c := p.data[p.i]
		if c == '"' {
			p.i++
			return start, p.i - 1, true
		}
		if c < 0x20 || c >= utf8.RuneSelf || c == '\\' {
			return 0, 0, false
		}
		p.i++
	}
	return 0, 0, false
}

// anyKey reads an object name: its bytes without the quotes, or a decoded
// copy when it has escapes (rare: names are usually plain).
func (p *fastParser) anyKey() ([]byte, bool) {
	start := p.i
	if !p.string() {
		return nil, false
	}
	raw := p.data[start:p.i]
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw[1 : len(raw)-1], true
	}
	k, err := unquote(raw)
	return []byte(k), err == nil
}

// plainString reads a string that encoding/json would decode to exactly its
// bytes (no escapes, valid UTF-8), or null.
func (p *fastParser) plainString() bool {
	if p.i < len(p.data) && p.data[p.i] == 'n' {
		return p.literal("null")
	}
	if !p.eat('"') {
		return false
	}
	start := p.i
	ascii := true
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			p.i++
			return ascii || utf8.Valid(p.data[start:p.i-1])
		case c < 0x20 || c == '\\':
			return false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		p.i++
	}
	return false
}

func (p *fastParser) literal(lit string) bool {
	if len(p.data)-p.i >= len(lit) && string(p.data[p.i:p.i+len(lit)]) == lit {
		p.i += len(lit)
		return true
	}
	return false
}

// value skips one JSON value, validating it as encoding/json's scanner does.
func (p *fastParser) value(depth int) bool {
	if p.i >= len(p.data) {
		return false
	}
	switch c := p.data[p.i]; {
	case c == '"':
		return p.string()
	case c == '{':
		if depth >= p.maxDepth {
			return false
		}
		p.i++
		p.ws()
		if p.eat('}') {
			return true
		}
		for {
			p.ws()
			if !p.string() {
				return false
			}
			p.ws()
			if !p.eat(':') {
				return false
			}
			p.ws()
			if !p.value(depth + 1) {
				return false
			}
			p.ws()
			if p.eat('}') {
				return true
			}
			if !p.eat(',') {
				return false
			}
		}
	case c == '[':
		if depth >= p.maxDepth {
			return false
		}
		p.i++
		p.ws()
		if p.eat(']') {
			return true
		}
		for {
			p.ws()
			if !p.value(depth + 1) {
				return false
			}
			p.ws()
			if p.eat(']') {
				return true
			}
			if !p.eat(',') {
				return false
			}
		}
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || '0' <= c && c <= '9':
		return p.number()
	}
	return false
}

// plainASCII marks the bytes string passes over without a second look:
// printable ASCII but '"' and '\\'.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// string skips a string: any byte but a control character, and valid
// escapes (encoding/json's scanner does not check UTF-8; nor does this, but
// it notes non-ASCII bytes in nonASCII for the caller to check).
func (p *fastParser) string() bool {
	if !p.eat('"') {
		return false
	}
	for p.i < len(p.data) {
		c := p.data[p.i]
		p.i++
		if plainASCII[c] {
			continue
		}
		switch {
		case c == '"':
			return true
		case c < 0x20:
			return false
		case c >= utf8.RuneSelf:
			p.nonASCII = true
		case c == '\\':
			if p.i >= len(p.data) {
				return false
			}
			e := p.data[p.i]
			p.i++
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(p.data)-p.i < 4 {
					return false
				}
				for _, h := range p.data[p.i : p.i+4] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				p.i += 4
			default:
				return false
			}
		}
	}
	return false
}

// number skips -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *fastParser) number() bool {
	p.eat('-')
	if p.eat('0') {
		// no more integer digits
	} else if p.digits() == 0 {
		return false
	}
	if p.eat('.') && p.digits() == 0 {
		return false
	}
	if p.eat('e') || p.eat('E') {
		if !p.eat('+') {
			p.eat('-')
		}
		if p.digits() == 0 {
			return false
		}
	}
	return true
}

func (p *fastParser) digits() int {
	start := p.i
	for p.i < len(p.data) && '0' <= p.data[p.i] && p.data[p.i] <= '9' {
		p.i++
	}
	return p.i - start
}
