package sinkworker

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/parquet-go/parquet-go"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// This file is the declared-schema path (config.Schema): events of any
// JSON shape, decoded into the columns the sink declares.
//
// A schema is compiled once into a plan: a tree of the columns' paths and
// the Parquet schema of the files. A fetcher's decoder then reads an event
// in one pass (fastParser, the envelope's scanner), noting where each
// column's value is, and converts each value straight into a parquet.Value
// that aliases the message body: no reflection, no map and, for the common
// event, no allocation per event. The batch keeps a fixed-width block of
// values per event (batch.vals): the declared columns, then the unmapped
// column when kept, then the provenance columns, in file order.

// Reasons a declared-schema event is poison, besides invalid_json and
// timestamp_out_of_range. The detail names the column.
const (
	reasonInvalidColumn = "invalid_column"
	reasonMissingColumn = "missing_column"
)

// Partition values are bounded so that every key stays well inside S3's
// 1,024 bytes whatever the events hold.
const (
	maxPartitionValue = 256 // escaped bytes of one value
	maxPartitionPath  = 512 // escaped bytes of all of them, with names
)

// provenanceColumns follow the declared ones in every file.
const provenanceColumns = 3

// schemaPlan is a compiled config.Schema, shared read-only by the fetchers
// and the encoder.
type schemaPlan struct {
	cols     []planColumn
	root     *pathNode
	time     int   // index in cols of the event-time column
	parts    []int // indices in cols of the partition columns, in order
	unmapped int   // index in the value block of the kept unmapped fields, or -1
	width    int   // values per event: columns, unmapped, provenance
	schema   *parquet.Schema
}

// planColumn is one declared column as the decoder converts it.
type planColumn struct {
	name     string
	typ      string
	format   string
	required bool
	def      int // definition level of a present value: 0 when required, else 1
}

// pathNode is a level of the events' object tree the schema reads: a key
// is a column's value (col ≥ 0), holds columns further down, or both (a
// json column with columns inside it).
type pathNode struct {
	col      int
	children []pathChild
}

// pathChild is one key of a node. A node has a few keys, so a scan that
// mostly compares lengths finds one faster than a map's hash would.
type pathChild struct {
	key  string
	node *pathNode
}

// child returns the node of key, or nil.
func (n *pathNode) child(key []byte) *pathNode {
	for i := range n.children {
		if c := &n.children[i]; len(c.key) == len(key) && c.key == string(key) {
			return c.node
		}
	}
	return nil
}

// compileSchema returns the plan of a validated schema.
func compileSchema(s *config.Schema) *schemaPlan {
	p := &schemaPlan{root: &pathNode{col: -1}, unmapped: -1}
	fields := make([]reflect.StructField, 0, len(s.Columns)+1+provenanceColumns)
	for i, c := range s.Columns {
		pc := planColumn{name: c.Name, typ: c.Type, format: c.TimestampFormat(), required: s.Required(c)}
		if !pc.required {
			pc.def = 1
		}
		p.cols = append(p.cols, pc)
		node := p.root
		for key := range strings.SplitSeq(c.ColumnPath(), ".") {
			next := node.child([]byte(key))
			if next == nil {
				next = &pathNode{col: -1}
				node.children = append(node.children, pathChild{key, next})
			}
			node = next
		}
		node.col = i
		if c.Name == s.Time {
			p.time = i
		}
		// A partition's strings repeat through its file: dictionary-encoded.
		dict := c.Type == config.TypeString && slices.Contains(s.PartitionBy, c.Name)
		fields = append(fields, parquetField(i, c.Name, c.Type, pc.required, dict))
	}
	for _, name := range s.PartitionBy {
		p.parts = append(p.parts, slices.IndexFunc(s.Columns, func(c config.Column) bool { return c.Name == name }))
	}
	n := len(s.Columns)
	if s.Unmapped.Action == config.UnmappedKeep {
		p.unmapped = n
		fields = append(fields, parquetField(n, s.Unmapped.Column, config.TypeJSON, false, false))
		n++
	}
	// As the envelope's Row writes them.
	fields = append(fields,
		reflect.StructField{Name: "P0", Type: reflect.TypeFor[string](), Tag: `parquet:"_subject,dict"`},
		reflect.StructField{Name: "P1", Type: reflect.TypeFor[int64](), Tag: `parquet:"_stream_seq"`},
		reflect.StructField{Name: "P2", Type: reflect.TypeFor[int64](), Tag: `parquet:"_received_at,timestamp(microsecond:utc)"`},
	)
	p.width = n + provenanceColumns
	p.schema = parquet.SchemaOf(reflect.New(reflect.StructOf(fields)).Interface())
	return p
}

// parquetField is the struct field whose parquet tag gives a column its
// physical and logical type. Only the schema is taken from the struct:
// values are written as parquet.Rows.
func parquetField(i int, name, typ string, required, dict bool) reflect.StructField {
	goType, logical := reflect.TypeFor[string](), ""
	switch typ {
	case config.TypeInt64:
		goType = reflect.TypeFor[int64]()
	case config.TypeDouble:
		goType = reflect.TypeFor[float64]()
	case config.TypeBoolean:
		goType = reflect.TypeFor[bool]()
	case config.TypeTimestamp:
		goType, logical = reflect.TypeFor[int64](), ",timestamp(microsecond:utc)"
	case config.TypeDate:
		goType, logical = reflect.TypeFor[int32](), ",date"
	}
	tag := name + logical
	if !required {
		tag += ",optional"
	}
	if dict {
		tag += ",dict"
	}
	return reflect.StructField{Name: "C" + strconv.Itoa(i), Type: goType, Tag: reflect.StructTag(`parquet:"` + tag + `"`)}
}

// schemaSummary says in a log line what the files hold.
func schemaSummary(s *config.Schema) string {
	if s == nil {
		return "the analytics envelope, by app_id"
	}
	return fmt.Sprintf("%d declared columns, time %s, by %v, unmapped %s", len(s.Columns), s.Time, s.PartitionBy,
		cmp.Or(s.Unmapped.Action, config.UnmappedDrop))
}

// span is where a value is in the body: [start, end); start < 0 when absent.
type span struct{ start, end int }

// declaredState is a decoder's scratch for the declared path.
type declaredState struct {
	plan  *schemaPlan
	spans []span
	// extra are the spans of the unmapped top-level members ("key": value).
	extra []span
	// vals is the event's value block, handed to the batcher, which copies it.
	vals []parquet.Value
	// allocated counts the bytes this event needed beyond its body:
	// unescaped strings and the unmapped column. They count against the
	// memory budget with it.
	allocated int
	part      []byte
	// interned partition paths, so that a batch holds one string per
	// partition instead of one per event.
	interned map[string]string
}

func newDeclaredState(p *schemaPlan) *declaredState {
	return &declaredState{plan: p, spans: make([]span, len(p.cols)), vals: make([]parquet.Value, p.width),
		interned: map[string]string{}}
}

// decodeDeclared fills row (its partition in AppID, its event time in
// Timestamp) and d.vals from data, or returns a *poisonError naming the
// column at fault.
func (d *decoder) decodeDeclared(data []byte, row *Row) error {
	st := d.declared
	pl := st.plan
	for i := range st.spans {
		st.spans[i] = span{-1, -1}
	}
	st.extra = st.extra[:0]
	st.allocated = 0
	p := fastParser{data: data, maxDepth: maxJSONDepth}
	p.ws()
	if !st.scanObject(&p, pl.root, 0) {
		return invalidJSON(data)
	}
	p.ws()
	if p.i != len(data) {
		return invalidJSON(data)
	}
	var ts time.Time
	for i := range pl.cols {
		c := &pl.cols[i]
		v, err := st.value(c, data, st.spans[i])
		if err != nil {
			return err
		}
		if v.IsNull() && c.required {
			return poison(reasonMissingColumn, c.name+": required")
		}
		if i == pl.time {
			ts = time.UnixMicro(v.Int64()).UTC()
			if err := d.win.check(ts); err != nil {
				pe := err.(*poisonError)
				return poison(pe.reason, c.name+": "+pe.detail)
			}
		}
		if v.IsNull() {
			st.vals[i] = parquet.Value{}.Level(0, 0, i)
		} else {
			st.vals[i] = v.Level(0, c.def, i)
		}
	}
	if pl.unmapped >= 0 {
		st.vals[pl.unmapped] = st.unmappedValue(data).Level(0, 1, pl.unmapped)
		if st.vals[pl.unmapped].IsNull() {
			st.vals[pl.unmapped] = parquet.Value{}.Level(0, 0, pl.unmapped)
		}
	}
	part, err := st.partition(data)
	if err != nil {
		return err
	}
	*row = Row{AppID: part, Timestamp: ts}
	return nil
}

// maxJSONDepth is encoding/json's nesting limit, which the declared path
// keeps (the envelope's fast path declines at maxFastDepth instead).
const maxJSONDepth = 10000

// invalidJSON is the poison for a body the scanner refused, with
// encoding/json's description of what is wrong.
func invalidJSON(data []byte) error {
	var v json.RawMessage
	if err := json.Unmarshal(data, &v); err != nil {
		return poison(reasonInvalidJSON, err.Error())
	}
	return poison(reasonInvalidJSON, "an event must be a JSON object")
}

// scanObject reads the object at p, noting the spans of node's columns
// and, at the top level, of the members no column's path starts with.
func (st *declaredState) scanObject(p *fastParser, node *pathNode, depth int) bool {
	if !p.eat('{') {
		return false
	}
	p.ws()
	if p.eat('}') {
		return true
	}
	for {
		p.ws()
		ks := p.i
		key, ok := p.anyKey()
		if !ok {
			return false
		}
		p.ws()
		if !p.eat(':') {
			return false
		}
		p.ws()
		vs := p.i
		child := node.child(key)
		switch {
		case child != nil && child.children != nil && p.i < len(p.data) && p.data[p.i] == '{':
			// Columns further down (and maybe this object as a json
			// column too: properties and properties.price).
			if depth+1 >= p.maxDepth || !st.scanObject(p, child, depth+1) {
				return false
			}
			if child.col >= 0 {
				st.spans[child.col] = span{vs, p.i}
			}
		case child != nil && child.col >= 0:
			if !p.value(depth + 1) {
				return false
			}
			st.spans[child.col] = span{vs, p.i}
		default:
			// Not read by any column (or, for a node, not an object: the
			// columns below it are absent).
			if !p.value(depth + 1) {
				return false
			}
			if child == nil && depth == 0 && st.plan.unmapped >= 0 {
				st.extra = append(st.extra, span{ks, p.i})
			}
		}
		p.ws()
		if p.eat('}') {
			return true
		}
		if !p.eat(',') {
			return false
		}
	}
}

// value converts the column's span to a parquet.Value (null when absent or
// JSON null), without its levels.
func (st *declaredState) value(c *planColumn, data []byte, sp span) (parquet.Value, error) {
	if sp.start < 0 {
		return parquet.Value{}, nil
	}
	raw := data[sp.start:sp.end]
	if raw[0] == 'n' { // null: the scanner validated the literal
		return parquet.Value{}, nil
	}
	wrong := func(what string) (parquet.Value, error) {
		return parquet.Value{}, poison(reasonInvalidColumn, c.name+": "+what)
	}
	switch c.typ {
	case config.TypeString:
		if raw[0] != '"' {
			return wrong("not a string")
		}
		return parquet.ByteArrayValue(st.text(raw)), nil
	case config.TypeJSON:
		return parquet.ByteArrayValue(st.validUTF8(raw)), nil
	case config.TypeBoolean:
		switch raw[0] {
		case 't':
			return parquet.BooleanValue(true), nil
		case 'f':
			return parquet.BooleanValue(false), nil
		}
		return wrong("not a boolean")
	case config.TypeInt64:
		if !isNumber(raw) {
			return wrong("not a number")
		}
		s := unsafe.String(unsafe.SliceData(raw), len(raw))
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return parquet.Int64Value(n), nil
		}
		// 1e3 or 10.0 are whole numbers too.
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
			return wrong("not a whole number in the int64 range: " + strings.Clone(s))
		}
		return parquet.Int64Value(int64(f)), nil
	case config.TypeDouble:
		if !isNumber(raw) {
			return wrong("not a number")
		}
		f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(raw), len(raw)), 64)
		if err != nil {
			return wrong("out of the double range: " + string(raw))
		}
		return parquet.DoubleValue(f), nil
	case config.TypeDate:
		if raw[0] != '"' {
			return wrong("not a date string (YYYY-MM-DD)")
		}
		s := st.text(raw)
		t, err := time.Parse(time.DateOnly, unsafe.String(unsafe.SliceData(s), len(s)))
		if err != nil {
			return wrong("not a date (YYYY-MM-DD): " + string(s))
		}
		return parquet.Int32Value(int32(t.Unix() / 86400)), nil
	case config.TypeTimestamp:
		return st.timestamp(c, raw)
	}
	panic("sinkworker: column type " + c.typ + " passed validation but has no decoder")
}

// timestamp reads a timestamp column in its declared format, as epoch
// microseconds.
func (st *declaredState) timestamp(c *planColumn, raw []byte) (parquet.Value, error) {
	wrong := func(what string) (parquet.Value, error) {
		return parquet.Value{}, poison(reasonInvalidColumn, c.name+": "+what)
	}
	if c.format == config.FormatRFC3339 {
		if raw[0] != '"' {
			return wrong("not an RFC 3339 string")
		}
		s := st.text(raw)
		t, err := time.Parse(time.RFC3339Nano, unsafe.String(unsafe.SliceData(s), len(s)))
		if err != nil {
			return wrong("not RFC 3339: " + string(s))
		}
		return parquet.Int64Value(t.UnixMicro()), nil
	}
	if !isNumber(raw) {
		return wrong("not a number (" + c.format + ")")
	}
	scale := 0 // epochMicros
	switch c.format {
	case config.FormatEpochSeconds:
		scale = 6
	case config.FormatEpochMillis:
		scale = 3
	}
	us, r := epochMicrosIn(raw, scale)
	if r != epochOK {
		return wrong("out of the timestamp range: " + string(raw))
	}
	return parquet.Int64Value(us), nil
}

// isNumber reports whether a validated JSON value is a number.
func isNumber(raw []byte) bool { return raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9' }

// text returns a JSON string's content: the body's own bytes when it has
// no escapes and is valid UTF-8, else a decoded copy (invalid bytes
// replaced by U+FFFD, as encoding/json does).
func (st *declaredState) text(raw []byte) []byte {
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return st.validUTF8(inner)
	}
	s, err := unquote(raw)
	if err != nil { // the scanner validated the string
		panic("sinkworker: a validated JSON string did not decode: " + err.Error())
	}
	st.allocated += len(s)
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// validUTF8 returns b, or a copy with each invalid byte replaced.
func (st *declaredState) validUTF8(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	s := validUTF8(b)
	st.allocated += len(s)
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// unmappedValue is the JSON object of the members no column's path starts
// with, or null when there are none.
func (st *declaredState) unmappedValue(data []byte) parquet.Value {
	if len(st.extra) == 0 {
		return parquet.Value{}
	}
	n := 2
	for _, sp := range st.extra {
		n += sp.end - sp.start + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, sp := range st.extra {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, data[sp.start:sp.end]...)
	}
	b = append(b, '}')
	st.allocated += cap(b)
	return parquet.ByteArrayValue(st.validUTF8(b))
}

// partition is the event's Hive path before date=, interned: each
// partition column as name=value, values escaped (hiveEscape), joined by /.
func (st *declaredState) partition(data []byte) (string, error) {
	pl := st.plan
	if len(pl.parts) == 0 {
		return "", nil
	}
	b := st.part[:0]
	for k, i := range pl.parts {
		c := &pl.cols[i]
		if k > 0 {
			b = append(b, '/')
		}
		b = append(b, c.name...)
		b = append(b, '=')
		start := len(b)
		v := st.vals[i]
		switch c.typ {
		case config.TypeString:
			if len(v.ByteArray()) == 0 {
				return "", poison(reasonInvalidColumn, c.name+": an empty string cannot be a partition value")
			}
			b = hiveEscape(b, v.ByteArray())
		case config.TypeInt64:
			b = strconv.AppendInt(b, v.Int64(), 10)
		case config.TypeBoolean:
			b = strconv.AppendBool(b, v.Boolean())
		case config.TypeDate:
			b = time.Unix(int64(v.Int32())*86400, 0).UTC().AppendFormat(b, time.DateOnly)
		}
		if len(b)-start > maxPartitionValue {
			return "", poison(reasonInvalidColumn, c.name+": the partition value is longer than "+
				strconv.Itoa(maxPartitionValue)+" bytes once escaped")
		}
	}
	st.part = b
	if len(b) > maxPartitionPath {
		return "", poison(reasonInvalidColumn, pl.cols[pl.parts[0]].name+": the partition path is longer than "+
			strconv.Itoa(maxPartitionPath)+" bytes")
	}
	if s, ok := st.interned[string(b)]; ok {
		return s, nil
	}
	if len(st.interned) >= 4096 {
		clear(st.interned)
	}
	s := string(b)
	st.interned[s] = s
	return s, nil
}

// setProvenance fills the event's provenance values.
func (st *declaredState) setProvenance(subject string, seq uint64, received time.Time) {
	n := st.plan.width - provenanceColumns
	st.vals[n] = parquet.ByteArrayValue(unsafe.Slice(unsafe.StringData(subject), len(subject))).Level(0, 0, n)
	st.vals[n+1] = parquet.Int64Value(int64(seq)).Level(0, 0, n+1)
	st.vals[n+2] = parquet.Int64Value(received.UnixMicro()).Level(0, 0, n+2)
}

// hiveEscape appends v escaped as Hive (and Spark, Trino, Athena) escape
// partition values: %XX for control characters, the path's own '/' and
// '=', the escape '%' itself and the characters Hive reserves. Everything
// else, non-ASCII UTF-8 and spaces included, stays as it is, so any string
// makes one valid key that decodes back to it (%XX, as Hive, Spark, Trino
// and DuckDB decode it).
func hiveEscape(b, v []byte) []byte {
	const hex = "0123456789ABCDEF"
	for _, c := range v {
		if hiveEscaped[c] {
			b = append(b, '%', hex[c>>4], hex[c&15])
		} else {
			b = append(b, c)
		}
	}
	return b
}

var hiveEscaped = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	for _, c := range "\"#%'*/:=?\\\x7f{[]^" {
		t[c] = true
	}
	return t
}()
