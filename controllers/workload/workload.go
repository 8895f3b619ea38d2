// Package workload builds the objects a WarehouseSink owns, as pure
// functions of the sink: the worker configuration (WorkerConfig), the
// Deployment that runs the workers (Deployment), the Service that exposes
// their metrics (Service) and the PodDisruptionBudget that bounds a node
// drain (PodDisruptionBudget). The controller applies what these return; tests
// check them without an API server.
package workload

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// Labels every object of a sink carries; SelectorLabels pick its pods.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelManagedBy = "app.kubernetes.io/managed-by"

	// WorkerName is the app.kubernetes.io/name of the worker pods.
	WorkerName = "jetsink-sinkworker"
	// ManagerName is the field owner and managed-by value of the operator.
	ManagerName = "jetsink"

	// AnnotationSpecHash records the hash of the desired spec on an owned
	// object, so the controller updates it only when that changes.
	AnnotationSpecHash = "jetsink.dev/spec-hash"
	// AnnotationCredentialsHash on the pod template carries a hash of the
	// Secret keys the workers read, so rotating a credential rolls the
	// workers (env from a Secret is read only at container start) while a
	// label or annotation added to the Secret (External Secrets, Reflector)
	// does not.
	AnnotationCredentialsHash = "jetsink.dev/credentials-hash"
)

// GracePeriodMargin is added to spec.shutdownTimeout to make the pod's
// terminationGracePeriodSeconds. The worker stops itself after
// shutdownTimeout; the margin covers what comes after its deadline (NAKing
// what could not be written, closing the NATS connection, exiting) so the
// kubelet's SIGKILL never lands in the middle of a drain.
const GracePeriodMargin = 15

// SelectorLabels select the worker pods of a sink.
func SelectorLabels(sink *jetsinkv1.WarehouseSink) map[string]string {
	return map[string]string{LabelName: WorkerName, LabelInstance: sink.Name}
}

// Labels are set on every object the sink owns.
func Labels(sink *jetsinkv1.WarehouseSink) map[string]string {
	l := SelectorLabels(sink)
	l[LabelComponent] = "sink-worker"
	l[LabelManagedBy] = ManagerName
	return l
}

// WorkerConfig renders the sink's spec into the worker's configuration, the
// struct the worker itself loads from the environment.
func WorkerConfig(sink *jetsinkv1.WarehouseSink) config.Config {
	s := sink.Spec
	c := config.Default()
	c.NATSURL = s.Source.URL
	c.Stream = s.Source.Stream
	c.Consumer = ConsumerName(sink)
	c.FilterSubjects = s.Source.FilterSubjects
	setDuration(&c.AckWait, s.Source.AckWait)
	setIf(&c.MaxDeliver, int(s.Source.MaxDeliver))
	setIf(&c.FetchBatchSize, int(s.Source.FetchBatchSize))
	c.DeadLetterSubject = s.Source.DeadLetterSubject
	// The operator owns the consumer: a worker never re-creates one that
	// was removed (that would replay the whole stream).
	c.CreateConsumer = false

	c.Bucket = s.Destination.Bucket
	c.Prefix = s.Destination.Prefix
	setIf(&c.Region, s.Destination.Region)
	c.Endpoint = s.Destination.Endpoint
	c.ForcePathStyle = s.Destination.ForcePathStyle
	c.Table = tableOf(s.Destination.Table)

	setIf(&c.Workers, int(s.WorkersPerReplica))
	setIf(&c.BatchMaxEvents, int(s.Batch.MaxEvents))
	if s.Batch.MaxBytes != nil {
		c.BatchMaxBytes = s.Batch.MaxBytes.Value()
	}
	setDuration(&c.BatchMaxAge, s.Batch.MaxAge)
	if s.Batch.MaxBufferedBytes != nil {
		c.MaxBufferedBytes = s.Batch.MaxBufferedBytes.Value()
	}
	setIf(&c.Compression, string(s.Parquet.Compression))
	setIf(&c.TimeGranularity, string(s.Partitioning.TimeGranularity))
	c.Schema = schema(s.Schema)
	setDuration(&c.ShutdownTimeout, s.ShutdownTimeout)
	return c
}

// schema is spec.schema as the worker reads it, nil (the analytics
// envelope, and no JETSINK_SCHEMA in the pod) when the sink declares none.
func schema(s *jetsinkv1.SchemaSpec) *config.Schema {
	if s == nil {
		return nil
	}
	out := &config.Schema{
		Time:        s.Time,
		PartitionBy: s.PartitionBy,
		Unmapped:    config.Unmapped{Action: string(s.Unmapped.Action), Column: s.Unmapped.Column},
		Columns:     make([]config.Column, 0, len(s.Columns)),
	}
	for _, c := range s.Columns {
		out.Columns = append(out.Columns, config.Column{
			Name: c.Name, Path: c.Path, Type: c.Type, Format: c.Format, Required: c.Required,
		})
	}
	return out
}

// tableOf is destination.table as the worker reads it, nil (plain Parquet
// files, and no JETSINK_TABLE in the pod) when the sink has none.
func tableOf(t *jetsinkv1.TableSpec) *config.Table {
	if t == nil {
		return nil
	}
	out := &config.Table{
		Catalog:           string(t.Catalog.Type),
		URI:               t.Catalog.URI,
		Warehouse:         t.Catalog.Warehouse,
		Namespace:         t.Namespace,
		Name:              t.Name,
		MaxFilesPerCommit: int(t.MaxFilesPerCommit),
	}
	if t.CommitInterval != nil {
		out.CommitInterval = t.CommitInterval.Duration.String()
	}
	return out
}

// ConsumerName is the durable consumer of the sink: spec.source.consumer,
// or one derived from the sink's namespace and name, so two sinks on one
// stream never share a consumer unless told to (and the operator refuses
// even then: see the controller's ownership check). The separator is "_",
// which neither a namespace nor a sink name can hold, so no two sinks
// derive the same name (with "-", team/a-events and team-a/events would).
func ConsumerName(sink *jetsinkv1.WarehouseSink) string {
	if sink.Spec.Source.Consumer != "" {
		return sink.Spec.Source.Consumer
	}
	return "jetsink_" + sink.Namespace + "_" + sink.Name
}

// Replicas is the number of workers the Deployment runs: none while the
// sink is suspended.
func Replicas(sink *jetsinkv1.WarehouseSink) int32 {
	if sink.Spec.Suspend {
		return 0
	}
	return ptr.Deref(sink.Spec.Replicas, 1)
}

// MaxAckPending is the consumer's limit for the whole sink: the per-pod
// limit (cfg.AckPendingPerProcess) times the replicas (at least one, so a
// sink scaled to zero keeps a usable consumer).
func MaxAckPending(sink *jetsinkv1.WarehouseSink, cfg config.Config) int {
	perPod := int64(cfg.AckPendingPerProcess())
	replicas := int64(1)
	if sink.Spec.Replicas != nil && *sink.Spec.Replicas > 1 {
		replicas = int64(*sink.Spec.Replicas)
	}
	return int(min(replicas*perPod, math.MaxInt32))
}

func setIf[T comparable](dst *T, v T) {
	var zero T
	if v != zero {
		*dst = v
	}
}

func setDuration(dst *time.Duration, d *metav1.Duration) {
	if d != nil {
		*dst = d.Duration
	}
}

// specHash is a stable hash of an object's desired spec.
func specHash(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("workload: spec not serialisable: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
