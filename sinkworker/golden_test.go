package sinkworker

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetsink/jetsink/sinkworker/config"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/golden-* from the current code")

// goldenBodies are envelope events of every form the decoder accepts:
// both timestamp forms, escapes and non-ASCII, nulls, invalid UTF-8,
// nested objects, absent optional fields.
var goldenBodies = []string{
	`{"event_id":"e1","app_id":"shop","event":"page_view","timestamp":"2026-03-14T10:00:00.123456Z","user_id":"u1","properties":{"path":"/a","n":1},"context":{"ip":"10.0.0.1"}}`,
	`{"event_id":"e2","app_id":"shop","event":"click","timestamp":1773482400500,"anonymous_id":"anon-2","session_id":"s2"}`,
	`{"event_id":"e3","app_id":"shop","event":"caf\u00e9 \"quoted\"","timestamp":"2026-03-14T10:59:59+02:00","user_id":null,"properties":{"deep":{"x":[1,2,{"y":null}]}},"context":null}`,
	`{"app_id":"blog","event":"read","timestamp":1773486000.25,"user_id":"ü-7","properties":{"bad":"` + "\xff" + `"}}`,
	`{"event_id":"e5","app_id":"blog","event":"read","timestamp":"2026-03-14T11:30:00Z","properties":{}}`,
}

// TestEnvelopeFilesAreByteIdentical pins the analytics envelope's files:
// the declared-schema path must not change a byte of what sinks without a
// schema write. -update-golden rewrites the files, for a change that means
// to alter them (then say so in the release notes).
func TestEnvelopeFilesAreByteIdentical(t *testing.T) {
	d := newDecoder(config.Default(), nil)
	received := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	byKey := map[partitionKey][]Row{}
	var order []partitionKey
	for i, body := range goldenBodies {
		var row Row
		if err := d.decode([]byte(body), &row); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		row.Subject = "events." + row.AppID
		row.StreamSeq = int64(i + 1)
		row.ReceivedAt = received.Add(time.Duration(i) * time.Millisecond)
		k := partitionKey{app: row.AppID, bucket: row.Timestamp.Unix() - row.Timestamp.Unix()%3600}
		if _, ok := byKey[k]; !ok {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], row)
	}
	enc, err := newEncoder("zstd", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, k := range order {
		rows := byKey[k]
		key := objectKey("events/", "EVENTS.1", "warehouse", "app_id="+k.app, k.bucket, "hour", uint64(rows[0].StreamSeq), uint64(rows[len(rows)-1].StreamSeq))
		keys = append(keys, key)
		var buf bytes.Buffer
		if err := enc.encode(&buf, rows); err != nil {
			t.Fatal(err)
		}
		compareGolden(t, "golden-"+strings.ReplaceAll(strings.TrimSuffix(key, ".parquet"), "/", "_")+".parquet", buf.Bytes())
	}
	compareGolden(t, "golden-keys.txt", []byte(strings.Join(keys, "\n")+"\n"))
}

func compareGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestEnvelopeFilesAreByteIdentical -update-golden to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: the envelope's file changed: %d bytes, golden %d bytes", name, len(got), len(want))
	}
}
