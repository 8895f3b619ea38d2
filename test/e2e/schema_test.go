package e2e

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
)

// A sink with spec.schema on real pods: the schema reaches the workers
// through the pod's environment, its files have the declared columns, and
// adding a column rolls the workers, after which every new file has it.
// Nothing is lost or written twice across the roll.
func TestDeclaredSchemaOnRealPodsAndItsChange(t *testing.T) {
	e := newEnv(t, "schema")
	sink := e.sink("events", 2)
	// The publisher's events, read as a declared schema: app_id still
	// partitions, so readBucket's partition check holds.
	sink.Spec.Schema = &jetsinkv1.SchemaSpec{
		Columns: []jetsinkv1.SchemaColumn{
			{Name: "event_id", Type: "string", Required: true},
			{Name: "app_id", Type: "string"},
			{Name: "timestamp", Type: "timestamp"},
			{Name: "path", Path: "properties.path", Type: "string"},
		},
		Time:        "timestamp",
		PartitionBy: []string{"app_id"},
	}
	e.create(sink)
	e.waitReady("events", 2)
	p := &publisher{e: e, prefix: "schema"}
	p.publish(2000)
	if dupes := e.waitAllWritten(p, 60*time.Second); dupes != 0 {
		t.Errorf("%d duplicate rows without any failure", dupes)
	}
	before := e.parquetKeys()
	want := []string{"event_id", "app_id", "timestamp", "path", "_subject", "_stream_seq", "_received_at"}
	for _, key := range before {
		if got := e.columns(key); !slices.Equal(got, want) {
			t.Fatalf("%s has columns %v, want %v", key, got, want)
		}
	}

	oldPods := e.pods("events")
	if _, err := kubectl(t, "patch", "-n", e.ns, "warehousesink/events", "--type=json", "-p",
		`[{"op":"add","path":"/spec/schema/columns/-","value":{"name":"user_id","type":"string"}}]`); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the workers rolled onto the new schema", func() (bool, string) {
		pods := e.pods("events")
		for _, pod := range pods {
			for _, o := range oldPods {
				if o.TemplateHash == pod.TemplateHash {
					return false, "pod " + pod.Name + " still runs the old schema"
				}
			}
		}
		return len(pods) == 2, fmt.Sprintf("%d pods", len(pods))
	})
	e.waitReady("events", 2)
	p.publish(2000)
	if dupes := e.waitAllWritten(p, 60*time.Second); dupes != 0 {
		t.Errorf("%d duplicate rows across the roll", dupes)
	}
	want = slices.Insert(want, 4, "user_id")
	added := 0
	for _, key := range e.parquetKeys() {
		if slices.Contains(before, key) {
			continue
		}
		added++
		if got := e.columns(key); !slices.Equal(got, want) {
			t.Errorf("%s, written after the change, has columns %v, want %v", key, got, want)
		}
	}
	if added == 0 {
		t.Error("no file written after the schema change")
	}
	t.Logf("%d files before the change, %d after", len(before), added)
}

// parquetKeys are the Parquet objects readBucket has read, sorted.
func (e *env) parquetKeys() []string { return slices.Sorted(maps.Keys(e.rows)) }

// columns are the column names of the Parquet object at key.
func (e *env) columns(key string) []string {
	e.t.Helper()
	body := e.object(key)
	f, err := parquet.OpenFile(bytes.NewReader(body), int64(len(body)))
	if err != nil {
		e.t.Fatalf("parquet %s: %v", key, err)
	}
	var names []string
	for _, c := range f.Schema().Columns() {
		names = append(names, strings.Join(c, "."))
	}
	return names
}
