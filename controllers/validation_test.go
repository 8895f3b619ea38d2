package controllers

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
)

// These tests run the CRD's schema (OpenAPI and CEL) in the real API
// server: the fake client runs neither, and a rule whose cost is over the
// budget would already have failed the CRD's install in TestMain.

// validationURL is where the sinks of these tests point. Nothing listens
// there; the sinks that are accepted are only reconciled into "unreachable".
const validationURL = "nats://127.0.0.1:1"

// wantRefused asserts that err is the API server's Invalid with a cause at
// field (or at an item of it) whose message says msg, and that the error a
// user reads (kubectl prints err.Error()) names the field. Field "" is the
// object itself: rules on metadata.name live there (a rule's fieldPath
// cannot point into metadata), so their msg names the field.
func wantRefused(t *testing.T, err error, field, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the API server accepted it; want it refused at %q with %q", field, msg)
	}
	var status apierrors.APIStatus
	if !apierrors.IsInvalid(err) || !errors.As(err, &status) {
		t.Fatalf("error is not Invalid: %v", err)
	}
	if !strings.Contains(err.Error(), field) {
		t.Errorf("error does not name %s: %v", field, err)
	}
	if d := status.Status().Details; d != nil {
		for _, c := range d.Causes {
			if c.Field == "<nil>" { // the API server's name for the object itself
				c.Field = ""
			}
			if (c.Field == field || field != "" && strings.HasPrefix(c.Field, field+"[")) && strings.Contains(c.Message, msg) {
				return
			}
		}
	}
	t.Errorf("no cause at %q saying %q: %v", field, msg, err)
}

func TestValidationRefusesBadSpecsNamingTheField(t *testing.T) {
	ns := namespace(t)
	secret := func(name string) *corev1.LocalObjectReference { return &corev1.LocalObjectReference{Name: name} }
	tests := []struct {
		name  string
		edit  func(*jetsinkv1.WarehouseSink)
		field string // where the API server puts the error
		msg   string // what the cause at field says
	}{
		// The name names the Deployment and the <name>-metrics Service.
		{"name over 55 characters", func(s *jetsinkv1.WarehouseSink) { s.Name = strings.Repeat("a", 56) },
			"", "metadata.name must be at most 55 characters"},
		{"name with dots", func(s *jetsinkv1.WarehouseSink) { s.Name = "events.v2" },
			"", "metadata.name must be a DNS-1035 label"},
		{"name starting with a digit", func(s *jetsinkv1.WarehouseSink) { s.Name = "2events" },
			"", "metadata.name must be a DNS-1035 label"},

		// Filter subjects JetStream would refuse (and the controller retry for ever).
		{"filter subject with a space", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.FilterSubjects = []string{"events created"} },
			"spec.source.filterSubjects", "source.filterSubjects must not contain whitespace"},
		{"> not the last token", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.FilterSubjects = []string{"events.>.created"} },
			"spec.source.filterSubjects", "source.filterSubjects: > must be a whole token and the last one"},
		{"> inside a token", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.FilterSubjects = []string{"events.a>"} },
			"spec.source.filterSubjects", "source.filterSubjects: > must be a whole token and the last one"},
		{"* inside a token", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.FilterSubjects = []string{"events.a*"} },
			"spec.source.filterSubjects", "source.filterSubjects: * must be a whole token"},
		{"empty token", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.FilterSubjects = []string{"events..created"} },
			"spec.source.filterSubjects", "source.filterSubjects must not have empty tokens"},
		{"leading dot", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.FilterSubjects = []string{".events"} },
			"spec.source.filterSubjects", "source.filterSubjects must not have empty tokens"},
		{"trailing dot", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.FilterSubjects = []string{"events."} },
			"spec.source.filterSubjects", "source.filterSubjects must not have empty tokens"},
		{"filters overlap under >", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.FilterSubjects = []string{"events.>", "events.a"} },
			"spec.source.filterSubjects", "source.filterSubjects must not overlap"},
		{"filters overlap under * on both sides", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Source.FilterSubjects = []string{"events.*.created", "events.web.*"}
		}, "spec.source.filterSubjects", "source.filterSubjects must not overlap"},
		{"filter > covers everything", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.FilterSubjects = []string{"orders.created", ">"} },
			"spec.source.filterSubjects", "source.filterSubjects must not overlap"},
		{"identical filters", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.FilterSubjects = []string{"events.a", "events.a"} },
			"spec.source.filterSubjects", "Duplicate value"},

		// The dead-letter subject must not be read back by the sink.
		{"dead letters are a filter", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Source.FilterSubjects = []string{"events.a", "dlq.events"}
		}, "spec.source.deadLetterSubject", "source.deadLetterSubject must not match any of source.filterSubjects"},
		{"dead letters under a > filter", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Source.DeadLetterSubject = "events.dlq"
		}, "spec.source.deadLetterSubject", "source.deadLetterSubject must not match any of source.filterSubjects"},
		{"dead letters under a * filter", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Source.FilterSubjects = []string{"dlq.*"}
		}, "spec.source.deadLetterSubject", "source.deadLetterSubject must not match any of source.filterSubjects"},
		{"dead-letter subject with an empty token", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.DeadLetterSubject = "dlq..events" },
			"spec.source.deadLetterSubject", "source.deadLetterSubject must not have empty tokens"},

		// Credentials only through Secrets.
		{"url with user and password", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.URL = "nats://sink:hunter2@nats.nats:4222" },
			"spec.source.url", "source.url must not carry credentials"},
		{"env overrides the operator's settings", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Env = []corev1.EnvVar{{Name: "HTTPS_PROXY", Value: "http://proxy:3128"}, {Name: "JETSINK_STREAM", Value: "OTHER"}}
		}, "spec.env", "env: names starting with JETSINK_"},
		{"env sets S3 credentials", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Env = []corev1.EnvVar{{Name: "AWS_SECRET_ACCESS_KEY", Value: "x"}}
		}, "spec.env", "env: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN come from destination.credentialsSecretRef"},
		{"NATS TLS Secret without a name", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.TLS = &jetsinkv1.TLSSpec{} },
			"spec.source.tls.secretRef", "tls.secretRef.name must name a Secret"},
		{"S3 TLS Secret without a name", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.TLS = &jetsinkv1.TLSSpec{} },
			"spec.destination.tls.secretRef", "tls.secretRef.name must name a Secret"},
		{"NATS credentials Secret without a name", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.CredentialsSecretRef = secret("") },
			"spec.source.credentialsSecretRef", "source.credentialsSecretRef.name must name a Secret"},
		{"S3 credentials Secret without a name", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.CredentialsSecretRef = secret("") },
			"spec.destination.credentialsSecretRef", "destination.credentialsSecretRef.name must name a Secret"},

		// Batch sizes the worker would refuse.
		{"zero maxBufferedBytes", func(s *jetsinkv1.WarehouseSink) { s.Spec.Batch.MaxBufferedBytes = ptr.To(resource.MustParse("0")) },
			"spec.batch.maxBufferedBytes", "batch.maxBufferedBytes must be greater than zero"},
		{"negative maxBufferedBytes", func(s *jetsinkv1.WarehouseSink) { s.Spec.Batch.MaxBufferedBytes = ptr.To(resource.MustParse("-1Mi")) },
			"spec.batch.maxBufferedBytes", "batch.maxBufferedBytes must be greater than zero"},
		{"maxBufferedBytes below maxBytes", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Batch.MaxBytes = ptr.To(resource.MustParse("64Mi"))
			s.Spec.Batch.MaxBufferedBytes = ptr.To(resource.MustParse("32Mi"))
		}, "spec.batch.maxBufferedBytes", "batch.maxBufferedBytes must be at least batch.maxBytes"},
		{"maxBufferedBytes below the default maxBytes", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Batch.MaxBufferedBytes = ptr.To(resource.MustParse("1M"))
		}, "spec.batch.maxBufferedBytes", "batch.maxBufferedBytes must be at least batch.maxBytes"},
		{"zero maxBytes", func(s *jetsinkv1.WarehouseSink) { s.Spec.Batch.MaxBytes = ptr.To(resource.MustParse("0")) },
			"spec.batch.maxBytes", "batch.maxBytes must be greater than zero"},
		{"zero maxAge", func(s *jetsinkv1.WarehouseSink) { s.Spec.Batch.MaxAge = &metav1.Duration{} },
			"spec.batch.maxAge", "batch.maxAge must be greater than zero"},
		{"negative maxEvents", func(s *jetsinkv1.WarehouseSink) { s.Spec.Batch.MaxEvents = -1 },
			"spec.batch.maxEvents", "should be greater than or equal to 1"},

		// Object keys.
		{"prefix with a leading slash", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Prefix = "/events/" },
			"spec.destination.prefix", "destination.prefix must not start with /"},
		{"prefix without a trailing slash", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Prefix = "events" },
			"spec.destination.prefix", "destination.prefix must end with /"},
		{"prefix with an empty segment", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Prefix = "a//b/" },
			"spec.destination.prefix", "destination.prefix must not contain an empty segment"},

		// S3 bucket names.
		{"bucket with two dots in a row", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Bucket = "my..bucket" },
			"spec.destination.bucket", "destination.bucket must not contain two dots in a row"},
		{"bucket that is an IP address", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Bucket = "192.168.1.1" },
			"spec.destination.bucket", "destination.bucket must not be an IP address"},
		{"bucket with capitals", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Bucket = "My-Lake" },
			"spec.destination.bucket", "should match"},
		{"missing bucket", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Bucket = "" },
			"spec.destination.bucket", "should be at least 3 chars long"},

		// Disruption budget.
		{"negative maxUnavailable", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.PodDisruptionBudget.MaxUnavailable = ptr.To(intstr.FromInt32(-1))
		}, "spec.podDisruptionBudget.maxUnavailable", "podDisruptionBudget.maxUnavailable must be a number of pods"},
		{"maxUnavailable not a percentage", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.PodDisruptionBudget.MaxUnavailable = ptr.To(intstr.FromString("half"))
		}, "spec.podDisruptionBudget.maxUnavailable", "podDisruptionBudget.maxUnavailable must be a number of pods"},
		{"maxUnavailable over 100%", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.PodDisruptionBudget.MaxUnavailable = ptr.To(intstr.FromString("150%"))
		}, "spec.podDisruptionBudget.maxUnavailable", "podDisruptionBudget.maxUnavailable must be a number of pods"},

		// What the worker's configuration check refuses.
		{"negative replicas", func(s *jetsinkv1.WarehouseSink) { s.Spec.Replicas = ptr.To[int32](-1) },
			"spec.replicas", "should be greater than or equal to 0"},
		{"negative workersPerReplica", func(s *jetsinkv1.WarehouseSink) { s.Spec.WorkersPerReplica = -1 },
			"spec.workersPerReplica", "should be greater than or equal to 1"},
		{"unknown compression", func(s *jetsinkv1.WarehouseSink) { s.Spec.Parquet.Compression = "lz4" },
			"spec.parquet.compression", "Unsupported value"},
		{"unknown granularity", func(s *jetsinkv1.WarehouseSink) { s.Spec.Partitioning.TimeGranularity = "minute" },
			"spec.partitioning.timeGranularity", "Unsupported value"},
		{"zero ackWait", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.AckWait = &metav1.Duration{} },
			"spec.source.ackWait", "source.ackWait must be greater than zero"},
		{"ackWait not longer than maxAge", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Source.AckWait = &metav1.Duration{Duration: 30 * time.Second}
			s.Spec.Batch.MaxAge = &metav1.Duration{Duration: time.Minute}
		}, "spec.source.ackWait", "source.ackWait must be longer than batch.maxAge"},
		{"negative maxDeliver", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.MaxDeliver = -1 },
			"spec.source.maxDeliver", "should be greater than or equal to 1"},
		{"negative fetchBatchSize", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.FetchBatchSize = -1 },
			"spec.source.fetchBatchSize", "should be greater than or equal to 1"},
		{"negative shutdownTimeout", func(s *jetsinkv1.WarehouseSink) { s.Spec.ShutdownTimeout = &metav1.Duration{Duration: -time.Second} },
			"spec.shutdownTimeout", "should match"},
		{"shutdownTimeout over an hour", func(s *jetsinkv1.WarehouseSink) { s.Spec.ShutdownTimeout = &metav1.Duration{Duration: 2 * time.Hour} },
			"spec.shutdownTimeout", "shutdownTimeout must be between 1s and 1h"},
		{"url that is not NATS", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.URL = "http://nats:4222" },
			"spec.source.url", "source.url must be nats://, tls://, ws:// or wss:// URLs"},
		{"url with a space and a password", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.URL = "nats://sink:hunter2@nats 4222" },
			"spec.source.url", "source.url must be nats://, tls://, ws:// or wss:// URLs"},
		{"stream with a dot", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.Stream = "EVENTS.v2" },
			"spec.source.stream", "should match"},
		{"service account that is not a name", func(s *jetsinkv1.WarehouseSink) { s.Spec.ServiceAccountName = "Sink_Workers" },
			"spec.serviceAccountName", "should match"},
	}
	if len(tests) < 26 {
		t.Fatalf("only %d bad specs", len(tests))
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSink(ns, validationURL)
			s.Name = fmt.Sprintf("bad-%d", i)
			tt.edit(s)
			err := k8s.Create(t.Context(), s)
			wantRefused(t, err, tt.field, tt.msg)
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the refusal echoes the password: %v", err)
			}
		})
	}
}

// TestValidationAcceptsGoodSpecs keeps the rules from being over-strict:
// specs near each rule's edge are accepted.
func TestValidationAcceptsGoodSpecs(t *testing.T) {
	ns := namespace(t)
	tests := []struct {
		name string
		edit func(*jetsinkv1.WarehouseSink)
	}{
		{"the tests' sink", func(*jetsinkv1.WarehouseSink) {}},
		{"name of 55 characters", func(s *jetsinkv1.WarehouseSink) { s.Name = "a" + strings.Repeat("-b", 27) }},
		{"filters that do not overlap", func(s *jetsinkv1.WarehouseSink) {
			// events.> needs a token after events; events.a.x is longer
			// than events.*; events.*.x and events.a.y differ in their last.
			s.Spec.Source.FilterSubjects = []string{"events", "events.a.>", "events.*", "orders.*.x", "orders.a.y", "$KV.cfg.>"}
			s.Spec.Source.DeadLetterSubject = "events.dlq.x"
		}},
		{"dead letters beside a > filter", func(s *jetsinkv1.WarehouseSink) {
			// events.> does not match events itself.
			s.Spec.Source.DeadLetterSubject = "events"
		}},
		{"no filter, dead letters", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.FilterSubjects = nil }},
		{"no dead letters", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.DeadLetterSubject = "" }},
		{"several servers", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.URL = "nats://a:4222,tls://b:4222" }},
		{"empty prefix", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Prefix = "" }},
		{"nested prefix", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Prefix = "lake/events.v2/" }},
		{"bucket with dots and hyphens", func(s *jetsinkv1.WarehouseSink) { s.Spec.Destination.Bucket = "my.data-lake.1" }},
		{"buffer as large as a batch", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Batch.MaxBytes = ptr.To(resource.MustParse("64Mi"))
			s.Spec.Batch.MaxBufferedBytes = ptr.To(resource.MustParse("64Mi"))
		}},
		{"percentage maxUnavailable", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.PodDisruptionBudget.MaxUnavailable = ptr.To(intstr.FromString("50%"))
		}},
		{"zero maxUnavailable", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.PodDisruptionBudget.MaxUnavailable = ptr.To(intstr.FromInt32(0))
		}},
		{"Secrets and proxies", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Source.CredentialsSecretRef = &corev1.LocalObjectReference{Name: "nats-creds"}
			s.Spec.Source.TLS = &jetsinkv1.TLSSpec{SecretRef: corev1.LocalObjectReference{Name: "nats-tls"}}
			s.Spec.Destination.CredentialsSecretRef = &corev1.LocalObjectReference{Name: "s3-creds"}
			s.Spec.Destination.TLS = &jetsinkv1.TLSSpec{SecretRef: corev1.LocalObjectReference{Name: "s3-ca"}}
			s.Spec.Env = []corev1.EnvVar{{Name: "HTTPS_PROXY", Value: "http://proxy:3128"}, {Name: "AWS_REGION_X", Value: "x"}, {Name: "MY_JETSINK_X", Value: "x"}}
			s.Spec.ServiceAccountName = "sink-workers"
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSink(ns, validationURL)
			s.Name = fmt.Sprintf("good-%d", i)
			tt.edit(s)
			if err := k8s.Create(t.Context(), s); err != nil {
				t.Errorf("refused a good sink: %v", err)
			}
		})
	}
}

// TestValidationKeepsTheConsumerIdentity: the stream, the consumer and the
// server cannot change under a sink (a new consumer would replay the whole
// stream, an old one would be left behind), while everything else can.
func TestValidationKeepsTheConsumerIdentity(t *testing.T) {
	ns := namespace(t)
	create := func(t *testing.T, name, consumer string) *jetsinkv1.WarehouseSink {
		t.Helper()
		s := newSink(ns, validationURL)
		s.Name = name
		s.Spec.Source.Consumer = consumer
		mustCreate(t, s)
		return s
	}
	// patch sends only what edit changed (a merge patch), so the
	// controller's own writes in between never conflict.
	patch := func(t *testing.T, name string, edit func(*jetsinkv1.WarehouseSink)) error {
		t.Helper()
		s, err := get(t, &jetsinkv1.WarehouseSink{}, ns, name)
		if err != nil {
			t.Fatal(err)
		}
		orig := s.DeepCopy()
		edit(s)
		return k8s.Patch(t.Context(), s, client.MergeFrom(orig))
	}

	create(t, "derived", "")
	create(t, "named", "events-sink")

	refused := []struct {
		name, sink string
		edit       func(*jetsinkv1.WarehouseSink)
		field, msg string
	}{
		{"stream changed", "named", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.Stream = "OTHER" },
			"spec.source.stream", "source.stream is immutable: the consumer belongs to the stream; create a new sink"},
		{"server changed", "named", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.URL = "nats://other:4222" },
			"spec.source.url", "source.url is immutable"},
		{"password added to the url", "named", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.URL = "nats://sink:hunter2@127.0.0.1:1" },
			"spec.source.url", "source.url must not carry credentials"},
		{"consumer renamed", "named", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.Consumer = "other" },
			"spec.source.consumer", "source.consumer is immutable"},
		{"consumer unset", "named", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.Consumer = "" },
			"spec.source.consumer", "source.consumer is immutable"},
		{"consumer set", "derived", func(s *jetsinkv1.WarehouseSink) { s.Spec.Source.Consumer = "jetsink-" + ns + "-derived" },
			"spec.source.consumer", "source.consumer is immutable"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			err := patch(t, tt.sink, tt.edit)
			wantRefused(t, err, tt.field, tt.msg)
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the refusal echoes the password: %v", err)
			}
		})
	}

	accepted := []struct {
		name, sink string
		edit       func(*jetsinkv1.WarehouseSink)
	}{
		{"scaled, filters and dead letters changed", "named", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Replicas = ptr.To[int32](5)
			s.Spec.Source.FilterSubjects = []string{"events.a.>", "events.b.>"}
			s.Spec.Source.DeadLetterSubject = "dlq.other"
		}},
		{"batching changed without a consumer name", "derived", func(s *jetsinkv1.WarehouseSink) {
			s.Spec.Batch.MaxBytes = ptr.To(resource.MustParse("128Mi"))
			s.Spec.Batch.MaxBufferedBytes = ptr.To(resource.MustParse("1Gi"))
			s.Spec.Destination.Prefix = "v2/"
		}},
	}
	for _, tt := range accepted {
		t.Run(tt.name, func(t *testing.T) {
			if err := patch(t, tt.sink, tt.edit); err != nil {
				t.Errorf("refused an update that keeps the consumer's identity: %v", err)
			}
		})
	}
}
