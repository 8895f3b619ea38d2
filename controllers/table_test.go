package controllers

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // catalogDB's set-up
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
	"github.com/jetsink/jetsink/internal/testutil/pgtest"
	"github.com/jetsink/jetsink/sinkworker/config"
)

func tableSpec(uri string) *jetsinkv1.TableSpec {
	return &jetsinkv1.TableSpec{
		Catalog: jetsinkv1.CatalogSpec{Type: jetsinkv1.CatalogSQL, URI: uri, Warehouse: "s3://lake/warehouse",
			CredentialsSecretRef: &corev1.LocalObjectReference{Name: "catalog-creds"}},
		Namespace: "analytics", Name: "events",
	}
}

func TestTableValidationRefusesBadTablesNamingTheField(t *testing.T) {
	ns := namespace(t)
	tests := []struct {
		name  string
		edit  func(*jetsinkv1.WarehouseSink)
		field string
		msg   string
	}{
		{"a catalog type this operator has not", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Table.Catalog.Type = "hive" },
			"spec.destination.table.catalog.type", "Unsupported value"},
		{"a password in the URI", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Destination.Table.Catalog.URI = "postgres://jetsink:hunter2@db:5432/lake"
		}, "spec.destination.table.catalog.uri", "without a password"},
		{"a URI that is not PostgreSQL", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Destination.Table.Catalog.URI = "mysql://db:3306/lake"
		}, "spec.destination.table.catalog.uri", "must be postgres://"},
		{"a URI without a database", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Destination.Table.Catalog.URI = "postgres://db:5432"
		}, "spec.destination.table.catalog.uri", "must be postgres://"},
		{"a warehouse in another bucket", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Destination.Table.Catalog.Warehouse = "s3://elsewhere/warehouse"
		}, "spec.destination.table.catalog.warehouse", "must be in destination.bucket"},
		{"a warehouse that is not on S3", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Destination.Table.Catalog.Warehouse = "file:///tmp/warehouse"
		}, "spec.destination.table.catalog.warehouse", "must be in destination.bucket"},
		{"a table name with a dot", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Table.Name = "events.v2" },
			"spec.destination.table.name", "should match"},
		{"no namespace", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Table.Namespace = "" },
			"spec.destination.table.namespace", "should be at least 1 chars long"},
		{"a commit interval of an hour", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Destination.Table.CommitInterval = &metav1.Duration{Duration: time.Hour}
		}, "spec.destination.table.commitInterval", "between 100ms and 15m"},
		{"no files per commit", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Table.MaxFilesPerCommit = -1 },
			"spec.destination.table.maxFilesPerCommit", "should be greater than or equal to 1"},
		{"an ackWait the commit would outlast", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Source.AckWait = &metav1.Duration{Duration: 90 * time.Second}
			s.Spec.Batch.MaxAge = &metav1.Duration{Duration: time.Minute}
			s.Spec.Destination.Table.CommitInterval = &metav1.Duration{Duration: time.Minute}
		}, "spec.source.ackWait", "longer than batch.maxAge plus destination.table.commitInterval"},
		{"an empty Secret name", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Destination.Table.Catalog.CredentialsSecretRef.Name = ""
		}, "spec.destination.table.catalog.credentialsSecretRef", "must name a Secret"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSink(ns, validationURL)
			s.Name = fmt.Sprintf("bad-table-%d", i)
			s.Spec.Destination.Table = tableSpec("postgres://jetsink@db:5432/lake")
			tt.edit(s)
			err := k8s.Create(t.Context(), s)
			wantRefused(t, err, tt.field, tt.msg)
			if testing.Verbose() && err != nil {
				t.Log(err)
			}
		})
	}

	// The table holds what the sink has committed: it cannot be swapped.
	s := newSink(ns, validationURL)
	s.Name = "renamed-table"
	s.Spec.Destination.Table = tableSpec("postgres://jetsink@db:5432/lake?sslmode=verify-full")
	mustCreate(t, s)
	s.Spec.Destination.Table.Name = "events_v2"
	wantRefused(t, k8s.Update(t.Context(), s), "spec.destination.table.name", "immutable")
}

// Every table the API server accepts is one the worker accepts.
func TestTableValidationAcceptsGoodTables(t *testing.T) {
	ns := namespace(t)
	for i, uri := range []string{
		"postgres://db/lake",
		"postgresql://jetsink@db.example.com:6432/lake?sslmode=verify-full&application_name=jetsink",
		"postgres://10.0.0.7:5432/iceberg_catalog",
	} {
		s := newSink(ns, validationURL)
		s.Name = fmt.Sprintf("good-table-%d", i)
		s.Spec.Destination.Table = tableSpec(uri)
		mustCreate(t, s)
		got, err := get(t, &jetsinkv1.WarehouseSink{}, ns, s.Name)
		if err != nil {
			t.Fatal(err)
		}
		if ci := got.Spec.Destination.Table.CommitInterval; ci == nil || ci.Duration != 10*time.Second ||
			got.Spec.Destination.Table.MaxFilesPerCommit != 100 {
			t.Errorf("%s: defaults commitInterval %v, maxFilesPerCommit %d; want 10s, 100", uri, ci, got.Spec.Destination.Table.MaxFilesPerCommit)
		}
		cfg := workload.WorkerConfig(got)
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: accepted by the API server, refused by the worker: %v", uri, err)
		}
	}
}

// catalogDB is a real PostgreSQL that wants passwords, with the user
// jetsink (password right-password) owning the database lake.
func catalogDB(t *testing.T) *pgtest.Server {
	t.Helper()
	pg := pgtest.Start(t)
	db, err := sql.Open("pgx", pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, stmt := range []string{"CREATE ROLE jetsink LOGIN PASSWORD 'right-password'", "CREATE DATABASE lake OWNER jetsink"} {
		if _, err := db.ExecContext(t.Context(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	pg.RequirePasswords(t)
	return pg
}

func catalogSecret(password string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "catalog-creds"},
		Data: map[string][]byte{"password": []byte(password)}}
}

// The catalog check logs in as the workers will, and tells a wrong
// password (only the user can fix it) from a database that is not there
// or not up (it may come back), naming the database and never the
// password.
func TestCatalogCheck(t *testing.T) {
	pg := catalogDB(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	cases := []struct {
		name, uri, password string
		reason              string
		stalled             bool
		want                string
	}{
		{name: "the right password", uri: "postgres://jetsink@" + pg.Addr + "/lake?sslmode=disable", password: "right-password"},
		{name: "a wrong password", uri: "postgres://jetsink@" + pg.Addr + "/lake?sslmode=disable", password: "wrong-password",
			reason: jetsinkv1.ReasonCatalogAuthFailed, stalled: true, want: `refused user "jetsink"`},
		{name: "a database that is not there", uri: "postgres://jetsink@" + pg.Addr + "/nolake?sslmode=disable", password: "right-password",
			reason: jetsinkv1.ReasonCatalogUnreachable, want: `database "nolake" does not exist`},
		{name: "nothing listening", uri: "postgres://jetsink@" + closed + "/lake?sslmode=disable", password: "right-password",
			reason: jetsinkv1.ReasonCatalogUnreachable, want: "connection refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := checkCatalog(t.Context(), &config.Table{URI: tc.uri}, catalogSecret(tc.password))
			if tc.reason == "" {
				if p != nil {
					t.Fatalf("want no problem, got %v", p)
				}
				return
			}
			if p == nil {
				t.Fatalf("want %s, got no problem", tc.reason)
			}
			t.Log(p.Message)
			if p.Reason != tc.reason || p.stalled != tc.stalled {
				t.Errorf("want %s (stalled %t), got %s (stalled %t): %s", tc.reason, tc.stalled, p.Reason, p.stalled, p.Message)
			}
			if !strings.Contains(p.Message, tc.want) {
				t.Errorf("message lacks %q: %s", tc.want, p.Message)
			}
			if strings.Contains(p.Message, tc.password) || strings.Contains(p.Message, "sslmode") {
				t.Errorf("message shows the password or the URI's options: %s", p.Message)
			}
		})
	}
	// A database that takes no connection does not hold the reconcile.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	p := checkCatalog(ctx, &config.Table{URI: "postgres://jetsink@" + silent.Addr().String() + "/lake"}, nil)
	if p == nil || p.Reason != jetsinkv1.ReasonCatalogUnreachable || time.Since(start) > catalogTimeout+time.Second {
		t.Errorf("a silent database: %v after %s, want CatalogUnreachable within %s", p, time.Since(start), catalogTimeout)
	}
}

// A sink whose catalog refuses its password says so in its status and an
// Event, and recovers once the Secret holds the right one.
func TestWrongCatalogPasswordIsReportedThenResolved(t *testing.T) {
	ns, srv := withStream(t)
	pg := catalogDB(t)
	secret := catalogSecret("wrong-password")
	secret.Namespace = ns
	mustCreate(t, secret)
	sink, _ := sinkOnS3(t, ns, srv, s3Keys, func(s *jetsinkv1.WarehouseSink) {
		s.Spec.Destination.Table = tableSpec("postgres://jetsink@" + pg.Addr + "/lake?sslmode=disable")
	})
	c := wantCondition(t, ns, sink.Name, jetsinkv1.ConditionStalled, metav1.ConditionTrue, jetsinkv1.ReasonCatalogAuthFailed)
	if !strings.Contains(c.Message, "credentialsSecretRef") || strings.Contains(c.Message, "wrong-password") {
		t.Errorf("message does not point at the Secret, or shows the password: %q", c.Message)
	}
	wantEvent(t, ns, jetsinkv1.ReasonCatalogAuthFailed)

	secret.Data["password"] = []byte("right-password")
	if err := k8s.Update(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	wantCondition(t, ns, sink.Name, jetsinkv1.ConditionStalled, metav1.ConditionFalse, jetsinkv1.ReasonAsExpected)
	wantEvent(t, ns, "Recovered")
}
