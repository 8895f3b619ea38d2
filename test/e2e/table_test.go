package e2e

import (
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the catalog's database
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/hack/localstack/stack"
	"github.com/jetsink/jetsink/internal/icebergread"
)

// A sink with destination.table on real pods: the operator runs the Iceberg
// worker with the catalog's password from a Secret, the workers create the
// table in the stack's PostgreSQL catalog and commit every event to it,
// and a worker pod force-deleted (SIGKILL) while events flow leaves no
// event lost and none twice, as a reader that is not iceberg-go reads the
// table (its catalog row, metadata, Avro manifests and Parquet files).
func TestTableSinkCommitsEachEventOnceOnRealPods(t *testing.T) {
	e := newEnv(t, "table")
	sink := e.sink("events", 2)
	sink.Spec.Destination.Table = e.table("events")
	sink.Spec.Destination.Table.CommitInterval = &metav1.Duration{Duration: time.Second}
	e.create(sink)
	e.waitReady("events", 2)
	var dep appsv1.Deployment
	if err := st.Client.Get(t.Context(), e.key("events"), &dep); err != nil {
		t.Fatal(err)
	}
	if cmd := dep.Spec.Template.Spec.Containers[0].Command; !slices.Equal(cmd, []string{"sinkworker-iceberg"}) {
		t.Errorf("the workers run %q, want [sinkworker-iceberg]", cmd)
	}

	p := &publisher{e: e, prefix: "table"}
	stop := p.flow()
	time.Sleep(4 * time.Second)
	victim := e.pods("events")[0]
	if _, err := kubectl(t, "delete", "pod", "-n", e.ns, victim.Name, "--grace-period=0", "--force"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	stop()
	p.publish(500)

	db, err := sql.Open("pgx", "postgres://postgres@"+st.CatalogAddr+"/"+stack.CatalogDatabase+"?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	get := icebergread.S3(st.S3Client())
	var tbl *icebergread.Table
	var ids []string
	eventually(t, 120*time.Second, "every published event in the table", func() (bool, string) {
		tbl, err = icebergread.Load(t.Context(), db, "jetsink", "e2e", "events", get)
		if err != nil {
			return false, err.Error()
		}
		if ids, err = tbl.Strings(t.Context(), get, "event_id"); err != nil {
			return false, err.Error()
		}
		return len(ids) >= p.published(), fmt.Sprintf("%d rows of %d published", len(ids), p.published())
	})
	seen := map[string]int{}
	for _, id := range ids {
		seen[id]++
	}
	dupes := len(ids) - len(seen)
	missing := 0
	for i := range p.published() {
		if seen[fmt.Sprintf("%s-%07d", p.prefix, i)] == 0 {
			missing++
		}
	}
	t.Logf("force-deleted %s while events flowed; the table holds %d rows of %d events in %d files, %d snapshots; %d lost, %d duplicate",
		victim.Name, len(ids), p.published(), len(tbl.Files), len(tbl.Snapshots), missing, dupes)
	if dupes != 0 || missing != 0 {
		t.Errorf("%d duplicate and %d lost rows: a table sink writes each event exactly once", dupes, missing)
	}
	e.waitReady("events", 2)
}

// A table the sink cannot write (here: app_id is a string column of the
// table, and this sink's schema says int64) stops its workers, and the
// sink says why in its status, from the worker's termination message: no
// kubectl logs needed.
func TestIncompatibleTableIsReportedInStatus(t *testing.T) {
	e := newEnv(t, "tablebad")
	envelope := e.sink("events", 1)
	envelope.Spec.Destination.Table = e.table("shared")
	e.create(envelope)
	e.waitReady("events", 1) // the table exists, with the envelope's columns

	typed := e.sink("typed", 1)
	typed.Spec.Destination.Table = e.table("shared")
	typed.Spec.Schema = &jetsinkv1.SchemaSpec{
		Columns: []jetsinkv1.SchemaColumn{{Name: "app_id", Type: "int64"}, {Name: "timestamp", Type: "timestamp"}},
		Time:    "timestamp",
	}
	e.create(typed)
	eventually(t, 90*time.Second, "the typed sink's status names the incompatible column", func() (bool, string) {
		s := e.getSink("typed")
		f := s.Status.LastWorkerFailure
		c := apimeta.FindStatusCondition(s.Status.Conditions, jetsinkv1.ConditionReady)
		if f == nil || c == nil {
			return false, fmt.Sprintf("status %+v", s.Status)
		}
		return c.Reason == jetsinkv1.ReasonWorkerCrashed && strings.Contains(f.Message, "incompatible") &&
				strings.Contains(f.Message, "app_id") && strings.Contains(c.Message, "app_id"),
			fmt.Sprintf("Ready %s/%s: %s; last failure %+v", c.Status, c.Reason, c.Message, f)
	})
	t.Logf("Ready: %s", apimeta.FindStatusCondition(e.getSink("typed").Status.Conditions, jetsinkv1.ConditionReady).Message)
}

// table is a destination.table in the stack's SQL catalog, e2e.<name>,
// warehoused in the env's bucket; its first call creates the catalog's
// password Secret in the env's namespace.
func (e *env) table(name string) *jetsinkv1.TableSpec {
	e.t.Helper()
	err := st.Client.Create(e.t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "catalog-creds"},
		StringData: map[string]string{"password": stack.CatalogPassword},
	})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		e.t.Fatal(err)
	}
	return &jetsinkv1.TableSpec{
		Catalog: jetsinkv1.CatalogSpec{Type: jetsinkv1.CatalogSQL, URI: st.CatalogURI,
			Warehouse:            "s3://" + e.bucket + "/warehouse",
			CredentialsSecretRef: &corev1.LocalObjectReference{Name: "catalog-creds"}},
		Namespace: "e2e", Name: name,
	}
}
