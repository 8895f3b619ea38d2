package workload

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/sinkworker/config"
)

func testSink() *jetsinkv1.WarehouseSink {
	return &jetsinkv1.WarehouseSink{
		ObjectMeta: metav1.ObjectMeta{Name: "events", Namespace: "analytics"},
		Spec: jetsinkv1.WarehouseSinkSpec{
			Replicas:          ptr.To[int32](2),
			WorkersPerReplica: 3,
			ShutdownTimeout:   &metav1.Duration{Duration: 30 * time.Second},
			Source: jetsinkv1.SourceSpec{
				URL: "nats://nats.nats:4222", Stream: "EVENTS", Consumer: "warehouse",
				FilterSubjects: []string{"events.>"}, AckWait: &metav1.Duration{Duration: 2 * time.Minute},
				MaxDeliver: 7, FetchBatchSize: 250, DeadLetterSubject: "dlq.events",
				CredentialsSecretRef: &corev1.LocalObjectReference{Name: "nats-creds"},
			},
			Destination: jetsinkv1.DestinationSpec{
				Bucket: "lake", Prefix: "events/", Region: "eu-west-1",
				Endpoint: "http://minio:9000", ForcePathStyle: true,
				CredentialsSecretRef: &corev1.LocalObjectReference{Name: "s3-creds"},
			},
			Batch: jetsinkv1.BatchSpec{
				MaxEvents: 5000, MaxBytes: ptr.To(resource.MustParse("32Mi")),
				MaxAge: &metav1.Duration{Duration: 45 * time.Second}, MaxBufferedBytes: ptr.To(resource.MustParse("128Mi")),
			},
			Parquet:      jetsinkv1.ParquetSpec{Compression: "snappy"},
			Partitioning: jetsinkv1.PartitioningSpec{TimeGranularity: "day"},
		},
	}
}

// The pod's environment must load back, through the worker's own loader,
// into exactly the configuration the spec asked for.
func TestWorkerEnvLoadsBackIntoTheSpec(t *testing.T) {
	sink := testSink()
	d := Deployment(sink, "jetsink:test", Credentials{})
	env := map[string]string{}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	got, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("the worker rejects the rendered env: %v", err)
	}
	want := config.Config{
		NATSURL: "nats://nats.nats:4222", Stream: "EVENTS", Consumer: "warehouse",
		FilterSubjects: []string{"events.>"}, AckWait: 2 * time.Minute, MaxDeliver: 7,
		FetchBatchSize: 250, DeadLetterSubject: "dlq.events", CreateConsumer: false,
		EventTimeMin: config.Default().EventTimeMin, EventTimeMaxAhead: config.Default().EventTimeMaxAhead,
		Bucket: "lake", Prefix: "events/", Region: "eu-west-1", Endpoint: "http://minio:9000", ForcePathStyle: true,
		Workers: 3, BatchMaxEvents: 5000, BatchMaxBytes: 32 << 20, BatchMaxAge: 45 * time.Second,
		MaxBufferedBytes: 128 << 20, Compression: "snappy", TimeGranularity: "day",
		ShutdownTimeout: 30 * time.Second, MetricsAddr: ":9090",
	}
	if diff := cmpConfig(got, want); diff != "" {
		t.Fatal(diff)
	}
}

func cmpConfig(got, want config.Config) string {
	ge, we := got.Environ(), want.Environ()
	for i := range we {
		if i >= len(ge) || ge[i] != we[i] {
			return "rendered config differs at " + we[i].Name + ": got " + ge[i].Value + ", want " + we[i].Value
		}
	}
	return ""
}

func TestDeployment(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*jetsinkv1.WarehouseSink)
		check func(t *testing.T, sink *jetsinkv1.WarehouseSink)
	}{{
		name: "grace period is the shutdown timeout rounded up plus the margin",
		edit: func(s *jetsinkv1.WarehouseSink) {
			s.Spec.ShutdownTimeout = &metav1.Duration{Duration: 12500 * time.Millisecond}
		},
		check: func(t *testing.T, s *jetsinkv1.WarehouseSink) {
			got := *Deployment(s, "img", Credentials{}).Spec.Template.Spec.TerminationGracePeriodSeconds
			if want := int64(13 + GracePeriodMargin); got != want {
				t.Errorf("terminationGracePeriodSeconds = %d, want %d", got, want)
			}
		},
	}, {
		name: "the sink's image wins over the operator's default",
		edit: func(s *jetsinkv1.WarehouseSink) { s.Spec.Image = "registry/custom:1" },
		check: func(t *testing.T, s *jetsinkv1.WarehouseSink) {
			if got := Deployment(s, "default:1", Credentials{}).Spec.Template.Spec.Containers[0].Image; got != "registry/custom:1" {
				t.Errorf("image = %q", got)
			}
			s.Spec.Image = ""
			if got := Deployment(s, "default:1", Credentials{}).Spec.Template.Spec.Containers[0].Image; got != "default:1" {
				t.Errorf("default image = %q", got)
			}
		},
	}, {
		name: "credentials are references into the Secrets, never values",
		check: func(t *testing.T, s *jetsinkv1.WarehouseSink) {
			refs := map[string]*corev1.SecretKeySelector{}
			for _, e := range Deployment(s, "img", Credentials{}).Spec.Template.Spec.Containers[0].Env {
				if e.ValueFrom != nil {
					refs[e.Name] = e.ValueFrom.SecretKeyRef
				}
			}
			key := refs["AWS_SECRET_ACCESS_KEY"]
			if key == nil || key.Name != "s3-creds" || key.Key != "AWS_SECRET_ACCESS_KEY" || *key.Optional {
				t.Errorf("AWS_SECRET_ACCESS_KEY ref = %+v", key)
			}
			pw := refs["JETSINK_NATS_PASSWORD"]
			if pw == nil || pw.Name != "nats-creds" || pw.Key != "password" || !*pw.Optional {
				t.Errorf("JETSINK_NATS_PASSWORD ref = %+v", pw)
			}
		},
	}, {
		name: "no credentials Secret means no credential env (the pod's identity is used)",
		edit: func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Destination.CredentialsSecretRef = nil
			s.Spec.Source.CredentialsSecretRef = nil
		},
		check: func(t *testing.T, s *jetsinkv1.WarehouseSink) {
			for _, e := range Deployment(s, "img", Credentials{}).Spec.Template.Spec.Containers[0].Env {
				if e.ValueFrom != nil {
					t.Errorf("unexpected secret env %s", e.Name)
				}
			}
		},
	}, {
		name: "the worker runs non-root on a read-only root filesystem with probes on the metrics port",
		check: func(t *testing.T, s *jetsinkv1.WarehouseSink) {
			c := Deployment(s, "img", Credentials{}).Spec.Template.Spec.Containers[0]
			sc := c.SecurityContext
			if !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation {
				t.Errorf("security context = %+v", sc)
			}
			if c.Ports[0].ContainerPort != 9090 || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("ports/probes = %+v %+v %+v", c.Ports, c.ReadinessProbe, c.LivenessProbe)
			}
		},
	}, {
		name: "replicas follow the spec; unset means one",
		edit: func(s *jetsinkv1.WarehouseSink) { s.Spec.Replicas = nil },
		check: func(t *testing.T, s *jetsinkv1.WarehouseSink) {
			if got := *Deployment(s, "img", Credentials{}).Spec.Replicas; got != 1 {
				t.Errorf("replicas = %d", got)
			}
		},
	}, {
		name: "scaling changes the spec hash but not the pod template (no rollout)",
		check: func(t *testing.T, s *jetsinkv1.WarehouseSink) {
			a := Deployment(s, "img", Credentials{})
			s.Spec.Replicas = ptr.To[int32](5)
			b := Deployment(s, "img", Credentials{})
			if a.Annotations[AnnotationSpecHash] == b.Annotations[AnnotationSpecHash] {
				t.Error("spec hash did not change with replicas")
			}
			if specHash(a.Spec.Template) != specHash(b.Spec.Template) {
				t.Error("pod template changed with replicas: scaling would roll every pod")
			}
		},
	}, {
		name: "rotating a credential rolls the pods; Secret metadata and unread keys do not",
		check: func(t *testing.T, s *jetsinkv1.WarehouseSink) {
			sec := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "s3-creds", ResourceVersion: "1"},
				Data:       map[string][]byte{"AWS_ACCESS_KEY_ID": []byte("id"), "AWS_SECRET_ACCESS_KEY": []byte("old")},
			}
			template := func() string { return specHash(Deployment(s, "img", Credentials{S3: sec}).Spec.Template) }
			a := template()
			sec.ResourceVersion, sec.Labels = "2", map[string]string{"reflector": "synced"}
			sec.Data["unrelated"] = []byte("x")
			if template() != a {
				t.Error("a label and a key the workers never read changed the pod template: every worker would restart")
			}
			sec.Data["AWS_SECRET_ACCESS_KEY"] = []byte("new")
			if template() == a {
				t.Error("pod template unchanged after the secret key rotated: workers would keep the old key")
			}
		},
	}, {
		name: "suspend scales to zero and keeps the pod template",
		check: func(t *testing.T, s *jetsinkv1.WarehouseSink) {
			a := Deployment(s, "img", Credentials{})
			s.Spec.Suspend = true
			b := Deployment(s, "img", Credentials{})
			if *b.Spec.Replicas != 0 || specHash(a.Spec.Template) != specHash(b.Spec.Template) {
				t.Errorf("suspended: replicas %d, template changed %v", *b.Spec.Replicas, specHash(a.Spec.Template) != specHash(b.Spec.Template))
			}
		},
	}, {
		name: "pods get no API token, no service links, and the placement the spec asks for",
		edit: func(s *jetsinkv1.WarehouseSink) {
			s.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
			s.Spec.PriorityClassName = "data-critical"
			s.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{
				MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: corev1.ScheduleAnyway,
			}}
			s.Spec.Env = []corev1.EnvVar{{Name: "HTTPS_PROXY", Value: "http://proxy:3128"}}
		},
		check: func(t *testing.T, s *jetsinkv1.WarehouseSink) {
			pod := Deployment(s, "img", Credentials{}).Spec.Template.Spec
			if *pod.AutomountServiceAccountToken || *pod.EnableServiceLinks {
				t.Error("worker pods mount a ServiceAccount token or get service-link env")
			}
			if pod.ImagePullSecrets[0].Name != "regcred" || pod.PriorityClassName != "data-critical" {
				t.Errorf("pull secrets %v, priority class %q", pod.ImagePullSecrets, pod.PriorityClassName)
			}
			tsc := pod.TopologySpreadConstraints
			if len(tsc) != 1 || tsc[0].LabelSelector.MatchLabels[LabelInstance] != "events" {
				t.Errorf("spread constraints do not select the sink's workers: %+v", tsc)
			}
			if e := pod.Containers[0].Env[0]; e.Name != "HTTPS_PROXY" {
				t.Errorf("first env %v, want the sink's extra env first (the operator's own come after and win)", e)
			}
		},
	}, {
		name: "TLS material reaches the workers from the Secrets, never copied into the pod spec",
		edit: func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Source.TLS = &jetsinkv1.TLSSpec{SecretRef: corev1.LocalObjectReference{Name: "nats-tls"}}
			s.Spec.Destination.TLS = &jetsinkv1.TLSSpec{SecretRef: corev1.LocalObjectReference{Name: "s3-ca"}}
		},
		check: func(t *testing.T, s *jetsinkv1.WarehouseSink) {
			from := map[string]string{}
			for _, e := range Deployment(s, "img", Credentials{}).Spec.Template.Spec.Containers[0].Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					from[e.Name] = e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
				} else if strings.Contains(e.Name, "TLS") {
					t.Errorf("%s rendered as a value", e.Name)
				}
			}
			for env, want := range map[string]string{
				"JETSINK_NATS_TLS_CA": "nats-tls/ca.crt", "JETSINK_NATS_TLS_CERT": "nats-tls/tls.crt",
				"JETSINK_NATS_TLS_KEY": "nats-tls/tls.key", "JETSINK_S3_TLS_CA": "s3-ca/ca.crt",
			} {
				if from[env] != want {
					t.Errorf("%s from %q, want %q", env, from[env], want)
				}
			}
		},
	}, {
		name: "a derived consumer name per sink, spec.source.consumer when set",
		edit: func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.Consumer = "" },
		check: func(t *testing.T, s *jetsinkv1.WarehouseSink) {
			if got := WorkerConfig(s).Consumer; got != "jetsink_analytics_events" {
				t.Errorf("derived consumer %q", got)
			}
			s.Spec.Source.Consumer = "mine"
			if got := WorkerConfig(s).Consumer; got != "mine" {
				t.Errorf("named consumer %q", got)
			}
		},
	}, {
		name: "the disruption budget selects the workers, and goes when disabled",
		check: func(t *testing.T, s *jetsinkv1.WarehouseSink) {
			p := PodDisruptionBudget(s)
			if p.Spec.MaxUnavailable.IntValue() != 1 || p.Spec.Selector.MatchLabels[LabelInstance] != "events" {
				t.Errorf("budget = %+v", p.Spec)
			}
			s.Spec.Replicas = ptr.To[int32](1)
			if PodDisruptionBudget(s) != nil {
				t.Error("a budget that bounds nothing (one worker, one may go)")
			}
			s.Spec.Replicas = ptr.To[int32](3)
			s.Spec.PodDisruptionBudget.Enabled = ptr.To(false)
			if PodDisruptionBudget(s) != nil {
				t.Error("a budget for a sink that disabled it")
			}
		},
	}, {
		name: "user pod labels cannot steal the selector labels",
		edit: func(s *jetsinkv1.WarehouseSink) {
			s.Spec.PodLabels = map[string]string{LabelInstance: "other", "team": "data"}
		},
		check: func(t *testing.T, s *jetsinkv1.WarehouseSink) {
			l := Deployment(s, "img", Credentials{}).Spec.Template.Labels
			if l[LabelInstance] != "events" || l["team"] != "data" {
				t.Errorf("pod labels = %v", l)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testSink()
			if tt.edit != nil {
				tt.edit(s)
			}
			tt.check(t, s)
		})
	}
}

// iotSchema is a sensor reading: a device, a site under tags, a reading, an
// epoch-millisecond event time, partitioned by site.
func iotSchema() *jetsinkv1.SchemaSpec {
	return &jetsinkv1.SchemaSpec{
		Columns: []jetsinkv1.SchemaColumn{
			{Name: "device", Type: "string", Required: true},
			{Name: "site", Path: "tags.site", Type: "string"},
			{Name: "temperature", Path: "reading.celsius", Type: "double"},
			{Name: "measured_at", Path: "ts", Type: "timestamp", Format: "epochMillis"},
		},
		Time:        "measured_at",
		PartitionBy: []string{"site"},
		Unmapped:    jetsinkv1.UnmappedSpec{Action: jetsinkv1.UnmappedKeep, Column: "extra"},
	}
}

// workerEnvOf is the Deployment's literal env (no Secret references).
func workerEnvOf(s *jetsinkv1.WarehouseSink) map[string]string {
	env := map[string]string{}
	for _, e := range Deployment(s, "img", Credentials{}).Spec.Template.Spec.Containers[0].Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

// The worker loads spec.schema back from the pod's env as declared, and a
// sink without one renders no JETSINK_SCHEMA at all, so its pod template
// (and its files) stay as they were before schemas existed.
func TestSchemaReachesTheWorker(t *testing.T) {
	s := testSink()
	before := specHash(Deployment(s, "img", Credentials{}).Spec.Template)
	if v, ok := workerEnvOf(s)["JETSINK_SCHEMA"]; ok {
		t.Fatalf("JETSINK_SCHEMA=%s without a schema", v)
	}

	s.Spec.Schema = iotSchema()
	env := workerEnvOf(s)
	got, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("the worker rejects the rendered schema: %v", err)
	}
	want := &config.Schema{
		Columns: []config.Column{
			{Name: "device", Type: "string", Required: true},
			{Name: "site", Path: "tags.site", Type: "string"},
			{Name: "temperature", Path: "reading.celsius", Type: "double"},
			{Name: "measured_at", Path: "ts", Type: "timestamp", Format: "epochMillis"},
		},
		Time: "measured_at", PartitionBy: []string{"site"},
		Unmapped: config.Unmapped{Action: "keep", Column: "extra"},
	}
	if !reflect.DeepEqual(got.Schema, want) {
		t.Errorf("worker's schema = %+v, want %+v", got.Schema, want)
	}
	if specHash(Deployment(s, "img", Credentials{}).Spec.Template) == before {
		t.Error("adding a schema left the pod template as it was: the workers would not roll")
	}

	// spec.schema and JETSINK_SCHEMA share their JSON names: the API
	// object's JSON is a schema the worker reads (it refuses unknown fields).
	text, err := json.Marshal(s.Spec.Schema)
	if err != nil {
		t.Fatal(err)
	}
	env["JETSINK_SCHEMA"] = string(text)
	if got, err := config.Load(func(k string) string { return env[k] }); err != nil || !reflect.DeepEqual(got.Schema, want) {
		t.Errorf("spec.schema's own JSON as JETSINK_SCHEMA: %+v, %v", got.Schema, err)
	}

	a := specHash(Deployment(s, "img", Credentials{}).Spec.Template)
	s.Spec.Schema.Columns[2].Type = "int64"
	if specHash(Deployment(s, "img", Credentials{}).Spec.Template) == a {
		t.Error("changing a column's type left the pod template as it was")
	}
}

func TestMaxAckPendingCoversEveryPod(t *testing.T) {
	s := testSink()
	per := WorkerConfig(s).AckPendingPerProcess()
	if want := (128<<20)/128 + 3*250; per != want {
		t.Errorf("per pod: %d, want the 128Mi buffer cap in 128-byte events plus a fetch per worker, %d", per, want)
	}
	if got := MaxAckPending(s, WorkerConfig(s)); got != 2*per {
		t.Errorf("2 replicas: %d, want %d", got, 2*per)
	}
	s.Spec.Replicas = ptr.To[int32](0)
	if got := MaxAckPending(s, WorkerConfig(s)); got != per {
		t.Errorf("scaled to zero: %d, want one pod's %d", got, per)
	}
}

func TestService(t *testing.T) {
	s := testSink()
	svc := Service(s)
	if svc.Name != "events-metrics" || svc.Spec.Ports[0].Port != 9090 || svc.Spec.Ports[0].TargetPort.StrVal != "metrics" {
		t.Errorf("service = %+v", svc.Spec)
	}
	d := Deployment(s, "img", Credentials{})
	for k, v := range svc.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("service selector %s=%s does not select the worker pods", k, v)
		}
	}
}

func testTable() *jetsinkv1.TableSpec {
	return &jetsinkv1.TableSpec{
		Catalog: jetsinkv1.CatalogSpec{
			Type: jetsinkv1.CatalogSQL, URI: "postgres://jetsink@catalog.db:5432/lake?sslmode=require",
			Warehouse:            "s3://lake/warehouse",
			CredentialsSecretRef: &corev1.LocalObjectReference{Name: "catalog-creds"},
		},
		Namespace: "analytics", Name: "events",
		CommitInterval: &metav1.Duration{Duration: 15 * time.Second}, MaxFilesPerCommit: 40,
	}
}

// A sink with a table runs the Iceberg worker with the table as the worker
// reads it back, and the catalog's password as a reference into its Secret;
// a sink without one runs the plain worker and renders no JETSINK_TABLE.
func TestTableReachesTheWorker(t *testing.T) {
	s := testSink()
	plain := Deployment(s, "img", Credentials{}).Spec.Template
	if c := plain.Spec.Containers[0].Command; !reflect.DeepEqual(c, []string{"sinkworker"}) {
		t.Errorf("plain sink runs %q, want [sinkworker]", c)
	}
	if v, ok := workerEnvOf(s)["JETSINK_TABLE"]; ok {
		t.Fatalf("JETSINK_TABLE=%s without a table", v)
	}

	s.Spec.Destination.Table = testTable()
	tmpl := Deployment(s, "img", Credentials{}).Spec.Template
	if c := tmpl.Spec.Containers[0].Command; !reflect.DeepEqual(c, []string{"sinkworker-iceberg"}) {
		t.Errorf("table sink runs %q, want [sinkworker-iceberg]", c)
	}
	env := workerEnvOf(s)
	got, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("the worker rejects the rendered table: %v", err)
	}
	want := &config.Table{Catalog: "sql", URI: "postgres://jetsink@catalog.db:5432/lake?sslmode=require",
		Warehouse: "s3://lake/warehouse", Namespace: "analytics", Name: "events",
		CommitInterval: "15s", MaxFilesPerCommit: 40}
	if !reflect.DeepEqual(got.Table, want) {
		t.Errorf("worker's table = %+v, want %+v", got.Table, want)
	}
	var password *corev1.EnvVar
	for i, e := range tmpl.Spec.Containers[0].Env {
		if e.Name == "PGPASSWORD" {
			password = &tmpl.Spec.Containers[0].Env[i]
		}
	}
	if password == nil || password.ValueFrom == nil || password.ValueFrom.SecretKeyRef == nil ||
		password.ValueFrom.SecretKeyRef.Name != "catalog-creds" || password.ValueFrom.SecretKeyRef.Key != "password" {
		t.Errorf("PGPASSWORD = %+v, want a reference to key password of Secret catalog-creds", password)
	}

	// A new password rolls the workers, as a new S3 key does.
	secret := func(pw string) *corev1.Secret {
		return &corev1.Secret{Data: map[string][]byte{"password": []byte(pw)}}
	}
	a := Deployment(s, "img", Credentials{Catalog: secret("one")}).Spec.Template.Annotations[AnnotationCredentialsHash]
	b := Deployment(s, "img", Credentials{Catalog: secret("two")}).Spec.Template.Annotations[AnnotationCredentialsHash]
	if a == "" || a == b {
		t.Errorf("credentials hash %q then %q: a new catalog password must roll the workers", a, b)
	}
}
