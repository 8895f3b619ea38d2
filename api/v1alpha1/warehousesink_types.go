package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Durations are validated with one pattern, repeated in each marker: Go
// durations such as 30s, 2m or 1h30m, the strings that CEL's duration() and
// the worker both parse.
//
// Every other rule the worker's own configuration check would apply, and
// that a schema can express, is a marker here too, so a bad spec is refused
// by the API server with a message naming the field instead of being
// half-applied by the controller. Each CEL message starts with the field's
// path under spec (or metadata.name). The rules use CEL libraries of
// Kubernetes 1.32 and later (quantity, the strings extension, two-variable
// comprehensions); lists and strings that rules iterate over carry
// maxItems/maxLength so the rules' estimated cost stays within the API
// server's budget. The rules on source.url sit on SourceSpec, not on the
// string: the API server's error for a rule on a string echoes the string,
// and with it any password in the URL.

// WarehouseSinkSpec is the desired state of a sink: where events come from,
// where the Parquet files go, and how the workers that move them run.
//
// +kubebuilder:validation:XValidation:rule="duration(self.source.ackWait) > duration(self.batch.maxAge)",message="source.ackWait must be longer than batch.maxAge, or events are redelivered while they wait in an open batch",fieldPath=".source.ackWait"
// +kubebuilder:validation:XValidation:rule="!has(self.destination.table) || !has(self.destination.table.commitInterval) || duration(self.source.ackWait) > duration(self.batch.maxAge) + duration(self.destination.table.commitInterval)",message="source.ackWait must be longer than batch.maxAge plus destination.table.commitInterval, or events are redelivered while they wait for their commit",fieldPath=".source.ackWait"
// +kubebuilder:validation:XValidation:rule="!has(self.destination.table) || self.destination.table.catalog.warehouse.startsWith('s3://' + self.destination.bucket + '/')",message="destination.table.catalog.warehouse must be in destination.bucket (s3://<bucket>/<path>): the workers write the table's data files there",fieldPath=".destination.table.catalog.warehouse"
type WarehouseSinkSpec struct {
	// suspend stops the sink without forgetting it: the workers are scaled
	// to zero, the consumer and its position are kept, and the Ready
	// condition says Suspended. Setting it back to false resumes where the
	// sink stopped.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// replicas is the number of sink worker pods. The /scale subresource
	// points here, so `kubectl scale` and HorizontalPodAutoscalers work.
	// Zero stops the sink without deleting it.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// workersPerReplica is the number of goroutines in each pod that fetch
	// and decode events in parallel.
	// +kubebuilder:default=4
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +optional
	WorkersPerReplica int32 `json:"workersPerReplica,omitempty"`

	// shutdownTimeout is how long a worker may take to drain on SIGTERM:
	// flush its open batches, upload them and ACK. What is not written by
	// then is NAKed so another pod takes it at once. The pod's
	// terminationGracePeriodSeconds is this plus a fixed margin.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="shutdownTimeout must be between 1s and 1h"
	// +optional
	ShutdownTimeout *metav1.Duration `json:"shutdownTimeout,omitempty"`

	// source is the JetStream stream and durable consumer events are read from.
	Source SourceSpec `json:"source"`

	// destination is the S3 bucket the Parquet files are written to.
	Destination DestinationSpec `json:"destination"`

	// batch bounds how many events a Parquet file holds and how long an
	// event may wait before its file is written.
	// +kubebuilder:default={}
	// +optional
	Batch BatchSpec `json:"batch,omitempty"`

	// parquet sets how files are encoded.
	// +kubebuilder:default={}
	// +optional
	Parquet ParquetSpec `json:"parquet,omitempty"`

	// partitioning sets the Hive-style partitions of the object keys.
	// +kubebuilder:default={}
	// +optional
	Partitioning PartitioningSpec `json:"partitioning,omitempty"`

	// schema declares the columns of the Parquet files and where each comes
	// from in an event (a JSON object), the column that is the event time,
	// and the columns that partition the object keys. Without it the files
	// hold the analytics envelope (event_id, app_id, event, timestamp, …,
	// partitioned by app_id), exactly as before schemas existed.
	// +optional
	Schema *SchemaSpec `json:"schema,omitempty"`

	// image is the sink worker's container image. Empty means the
	// operator's default worker image (its own image).
	// +optional
	Image string `json:"image,omitempty"`

	// imagePullPolicy of the worker container.
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// resources are the worker container's CPU and memory requests and
	// limits. Size the memory limit above batch.maxBufferedBytes.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// serviceAccountName runs the workers under this ServiceAccount, for
	// example one annotated for IAM Roles for Service Accounts when no S3
	// credentials Secret is given.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// nodeSelector constrains the worker pods to matching nodes.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations of the worker pods.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// affinity of the worker pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// podLabels are added to the worker pods' labels.
	// +optional
	PodLabels map[string]string `json:"podLabels,omitempty"`

	// podAnnotations are added to the worker pods' annotations.
	// +optional
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`

	// imagePullSecrets name Secrets of the sink's namespace the kubelet uses
	// to pull the worker image from a private registry.
	// +optional
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// priorityClassName of the worker pods.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// topologySpreadConstraints of the worker pods, e.g. to spread them
	// across zones.
	// +optional
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`

	// env adds variables to the worker container, e.g. HTTPS_PROXY and
	// NO_PROXY. Names starting with JETSINK_ are the operator's and are
	// refused; so are the credential variables the operator sets from the
	// Secrets (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.all(e, !e.name.startsWith('JETSINK_'))",message="env: names starting with JETSINK_ are the operator's own settings of the worker and cannot be set here"
	// +kubebuilder:validation:XValidation:rule="self.all(e, !(e.name in ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN']))",message="env: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN come from destination.credentialsSecretRef and cannot be set here"
	// +optional
	Env []corev1.EnvVar `json:"env,omitempty"`

	// podDisruptionBudget is the PodDisruptionBudget the operator keeps for
	// the workers, so a node drain never evicts more of them at once than
	// maxUnavailable allows. None is made while maxUnavailable (a number)
	// is at least the number of workers: it would bound nothing.
	// +kubebuilder:default={}
	// +optional
	PodDisruptionBudget PodDisruptionBudgetSpec `json:"podDisruptionBudget,omitempty"`
}

// PodDisruptionBudgetSpec sets the workers' PodDisruptionBudget.
type PodDisruptionBudgetSpec struct {
	// enabled makes the operator create and own the PodDisruptionBudget;
	// false deletes the one it owns.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// maxUnavailable is how many worker pods a voluntary disruption (a
	// node drain) may take down at once: a number of pods (0 or more) or a
	// percentage of them (0% to 100%, e.g. 50%).
	// +kubebuilder:default=1
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')",message="podDisruptionBudget.maxUnavailable must be a number of pods (0 or more) or a percentage from 0% to 100%, such as 50%"
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
}

// TLSSpec names a Secret of the sink's namespace with TLS material in the
// keys cert-manager and kubernetes.io/tls Secrets use.
type TLSSpec struct {
	// secretRef names the Secret. For NATS it may hold ca.crt (the CA that
	// signed the server's certificate) and tls.crt with tls.key (a client
	// certificate); for S3, ca.crt. Its name must not be empty.
	// +kubebuilder:validation:XValidation:rule="has(self.name) && self.name != ''",message="tls.secretRef.name must name a Secret"
	SecretRef corev1.LocalObjectReference `json:"secretRef"`
}

// ConsumerDeletionPolicy says what happens to the JetStream consumer when
// its sink is deleted.
// +kubebuilder:validation:Enum=Retain;Delete
type ConsumerDeletionPolicy string

const (
	// ConsumerRetain keeps the consumer and its position in the stream.
	ConsumerRetain ConsumerDeletionPolicy = "Retain"
	// ConsumerDelete removes the consumer when the sink is deleted.
	ConsumerDelete ConsumerDeletionPolicy = "Delete"
)

// SourceSpec is where events are read from.
//
// Subjects are matched token by token, as NATS does: `*` matches any one
// token and `>` one or more trailing tokens. Two filterSubjects overlap
// when some subject matches both; JetStream refuses such a consumer (error
// 10138), so the API server refuses the sink.
//
// +kubebuilder:validation:XValidation:rule="self.url.matches('^(nats|tls|ws|wss)://[^[:space:]]+$')",message="source.url must be nats://, tls://, ws:// or wss:// URLs, comma-separated, without spaces",fieldPath=".url"
// +kubebuilder:validation:XValidation:rule="!self.url.contains('@')",message="source.url must not carry credentials (user:password@host): put them in the Secret named by source.credentialsSecretRef",fieldPath=".url"
// +kubebuilder:validation:XValidation:rule="self.url == oldSelf.url",message="source.url is immutable: the consumer and its position live on that server; create a new sink",fieldPath=".url"
// +kubebuilder:validation:XValidation:rule="has(self.consumer) == has(oldSelf.consumer)",message="source.consumer is immutable: a new consumer would replay the whole stream; create a new sink",fieldPath=".consumer"
// +kubebuilder:validation:XValidation:rule="!has(self.deadLetterSubject) || !has(self.filterSubjects) || [self.deadLetterSubject.split('.')].all(d, self.filterSubjects.map(f, f.split('.')).all(x, !((x.size() == d.size() || (x.size() < d.size() && x[x.size() - 1] == '>')) && x.all(i, t, i >= d.size() || t == d[i] || t == '*' || t == '>'))))",message="source.deadLetterSubject must not match any of source.filterSubjects: the sink would read its own dead letters back",fieldPath=".deadLetterSubject"
type SourceSpec struct {
	// url of the NATS server(s), comma-separated, e.g. nats://nats.nats:4222.
	// It must not carry credentials (user:password@): they go in the Secret
	// named by credentialsSecretRef. Cannot be changed: the consumer and its
	// position live on that server.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url"`

	// stream is the JetStream stream to read. Cannot be changed: the
	// consumer belongs to the stream.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[^.*>\s/\\]+$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="source.stream is immutable: the consumer belongs to the stream; create a new sink"
	Stream string `json:"stream"`

	// consumer is the durable pull consumer the operator creates and keeps
	// matching this spec; all workers of the sink share it. Empty means
	// jetsink_<namespace>_<name>, unique to the sink. The operator only
	// changes or deletes a consumer whose metadata names this sink as its
	// owner; to take over an existing consumer, annotate the sink with
	// jetsink.dev/adopt-consumer: "true". Cannot be changed: a new name
	// would start a consumer that replays the whole stream.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[^.*>\s/\\]+$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="source.consumer is immutable: a new consumer would replay the whole stream; create a new sink"
	// +optional
	Consumer string `json:"consumer,omitempty"`

	// consumerDeletionPolicy says whether deleting the sink keeps the
	// consumer (Retain, the default: a re-created sink resumes where it
	// stopped) or deletes it (Delete).
	// +kubebuilder:default=Retain
	// +optional
	ConsumerDeletionPolicy ConsumerDeletionPolicy `json:"consumerDeletionPolicy,omitempty"`

	// filterSubjects restricts the consumer to these subjects of the stream.
	// Empty means every subject. Each is a NATS subject: dot-separated
	// tokens, none empty, no whitespace; `*` (one token) and `>` (the rest,
	// last only) are whole tokens. No two may overlap (match a common
	// subject), e.g. events.> and events.a, or events.*.x and events.a.*.
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="self.all(s, !s.matches('[[:space:]]'))",message="source.filterSubjects must not contain whitespace"
	// +kubebuilder:validation:XValidation:rule="self.all(s, !s.startsWith('.') && !s.endsWith('.') && !s.contains('..'))",message="source.filterSubjects must not have empty tokens (a leading, trailing or double dot)"
	// +kubebuilder:validation:XValidation:rule="self.all(s, !s.matches('>.|[^.]>'))",message="source.filterSubjects: > must be a whole token and the last one, e.g. events.>"
	// +kubebuilder:validation:XValidation:rule="self.all(s, !s.matches('[^.][*]|[*][^.]'))",message="source.filterSubjects: * must be a whole token, e.g. events.*.created"
	// +kubebuilder:validation:XValidation:rule="self.map(s, s.split('.')).all(x, self.map(s, s.split('.')).all(y, x == y || !((x.size() == y.size() || (x.size() < y.size() && x[x.size() - 1] == '>') || (y.size() < x.size() && y[y.size() - 1] == '>')) && x.all(i, t, i >= y.size() || t == y[i] || t == '*' || t == '>' || y[i] == '*' || y[i] == '>'))))",message="source.filterSubjects must not overlap: no subject may match two of them (JetStream refuses such a consumer)"
	// +listType=set
	// +optional
	FilterSubjects []string `json:"filterSubjects,omitempty"`

	// ackWait is how long the server waits for an ACK before redelivering.
	// Must be longer than batch.maxAge; workers keep events in open batches
	// leased, so it bounds only how fast a dead worker's events come back.
	// +kubebuilder:default="2m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="source.ackWait must be greater than zero"
	// +optional
	AckWait *metav1.Duration `json:"ackWait,omitempty"`

	// maxDeliver bounds the deliveries of an event whose batch fails by
	// itself (cannot be encoded): after that many it is dead-lettered
	// instead of being handed back again. Deliveries spent by anything that
	// is not the event's fault (an S3 or network outage, a pod restart, a
	// lost lease) never dead-letter or drop an event: the consumer the
	// operator creates has no delivery limit of its own, and workers retry
	// sink-side failures in place without spending deliveries.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxDeliver int32 `json:"maxDeliver,omitempty"`

	// fetchBatchSize is how many messages a worker asks for per pull request.
	// +kubebuilder:default=500
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	FetchBatchSize int32 `json:"fetchBatchSize,omitempty"`

	// deadLetterSubject receives poison events (undecodable, or missing
	// app_id, event or timestamp; with schema, a required value missing or
	// of the wrong type) with headers saying why, before they are
	// terminated. Empty means poison events are terminated and counted only.
	// It must not match any of filterSubjects, or the sink would read its
	// own dead letters back.
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[^\s*>]+$`
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('.') && !self.endsWith('.') && !self.contains('..')",message="source.deadLetterSubject must not have empty tokens (a leading, trailing or double dot)"
	// +optional
	DeadLetterSubject string `json:"deadLetterSubject,omitempty"`

	// credentialsSecretRef names a Secret in the sink's namespace holding
	// NATS credentials under any of the keys user, password, token, nkey
	// (a seed) or creds (a .creds file's contents).
	// +kubebuilder:validation:XValidation:rule="has(self.name) && self.name != ''",message="source.credentialsSecretRef.name must name a Secret"
	// +optional
	CredentialsSecretRef *corev1.LocalObjectReference `json:"credentialsSecretRef,omitempty"`

	// tls configures TLS to NATS beyond the system CAs: a private CA
	// (ca.crt) and a client certificate (tls.crt, tls.key).
	// +optional
	TLS *TLSSpec `json:"tls,omitempty"`
}

// DestinationSpec is where Parquet files are written.
type DestinationSpec struct {
	// bucket is the S3 bucket name: 3 to 63 lowercase letters, digits, dots
	// and hyphens, starting and ending with a letter or digit, without two
	// dots in a row, and not an IP address.
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9][a-z0-9.-]*[a-z0-9]$`
	// +kubebuilder:validation:XValidation:rule="!self.contains('..')",message="destination.bucket must not contain two dots in a row"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$')",message="destination.bucket must not be an IP address"
	Bucket string `json:"bucket"`

	// prefix starts every object key, e.g. events/. Keys continue with
	// app_id=<app>/date=YYYY-MM-DD/hour=HH/ (with schema, its partitionBy
	// columns instead of app_id). Empty, or segments ending in /,
	// with no leading / and no empty segment (//).
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/')",message="destination.prefix must not start with /: object keys are relative to the bucket"
	// +kubebuilder:validation:XValidation:rule="self == '' || self.endsWith('/')",message="destination.prefix must end with /, e.g. events/"
	// +kubebuilder:validation:XValidation:rule="!self.contains('//')",message="destination.prefix must not contain an empty segment (//)"
	// +optional
	Prefix string `json:"prefix,omitempty"`

	// region of the bucket.
	// +kubebuilder:default=us-east-1
	// +optional
	Region string `json:"region,omitempty"`

	// endpoint of an S3-compatible store (MinIO, versitygw, R2...). Empty
	// means AWS S3.
	// +kubebuilder:validation:Pattern=`^https?://[^\s]+$`
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// forcePathStyle addresses the bucket in the path rather than the host
	// name, as most S3-compatible stores need.
	// +optional
	ForcePathStyle bool `json:"forcePathStyle,omitempty"`

	// credentialsSecretRef names a Secret in the sink's namespace with the
	// keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally
	// AWS_SESSION_TOKEN. Without it the workers use the pod's identity
	// (IAM Roles for Service Accounts, instance role).
	// +kubebuilder:validation:XValidation:rule="has(self.name) && self.name != ''",message="destination.credentialsSecretRef.name must name a Secret"
	// +optional
	CredentialsSecretRef *corev1.LocalObjectReference `json:"credentialsSecretRef,omitempty"`

	// tls trusts a private CA (the ca.crt key of the Secret) for an
	// S3-compatible endpoint with its own certificates.
	// +optional
	TLS *TLSSpec `json:"tls,omitempty"`

	// table commits the files to an Apache Iceberg table, each event
	// exactly once, instead of leaving them as plain Parquet files under
	// prefix (at least once). The table's data files go under its own
	// location, in this bucket.
	// +optional
	Table *TableSpec `json:"table,omitempty"`
}

// CatalogType is the kind of Iceberg catalog.
// +kubebuilder:validation:Enum=sql
type CatalogType string

// CatalogSQL is a SQL (JDBC-style) catalog in a PostgreSQL database: the
// iceberg_tables schema Spark's and Trino's JDBC catalogs read too.
const CatalogSQL CatalogType = "sql"

// TableSpec is the Iceberg table a sink commits to. The workers create it
// when it is missing, with the columns of spec.schema (or the analytics
// envelope) and a partition spec of the partition columns (identity) and
// the time column (hour or day, as partitioning.timeGranularity), and add
// the columns spec.schema adds. A table they cannot write (a column of
// another type, another partition spec) is refused, and the workers say
// why.
type TableSpec struct {
	// catalog is where the table is registered.
	Catalog CatalogSpec `json:"catalog"`

	// namespace of the table in the catalog (a database, in Spark and
	// Trino terms). Created when missing.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="destination.table.namespace is immutable: the table holds what the sink has committed; create a new sink"
	Namespace string `json:"namespace"`

	// name of the table in the namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="destination.table.name is immutable: the table holds what the sink has committed; create a new sink"
	Name string `json:"name"`

	// commitInterval is how long a written file may wait for others to be
	// committed with it. Its events are ACKed after the commit, so it
	// adds to their latency; source.ackWait must be longer than
	// batch.maxAge plus commitInterval. Longer intervals make fewer
	// snapshots.
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('100ms') && duration(self) <= duration('15m')",message="destination.table.commitInterval must be between 100ms and 15m"
	// +optional
	CommitInterval *metav1.Duration `json:"commitInterval,omitempty"`

	// maxFilesPerCommit commits at once when this many files wait, before
	// commitInterval is up.
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	MaxFilesPerCommit int32 `json:"maxFilesPerCommit,omitempty"`
}

// CatalogSpec says how to reach an Iceberg catalog.
//
// +kubebuilder:validation:XValidation:rule="self.type != 'sql' || self.uri.matches('^postgres(ql)?://([^:@/[:space:]]+@)?[^/@[:space:]]+/[^[:space:]]+$')",message="destination.table.catalog.uri must be postgres://[user@]host[:port]/database[?options], without a password (it comes from credentialsSecretRef)",fieldPath=".uri"
type CatalogSpec struct {
	// type of the catalog: sql (PostgreSQL).
	Type CatalogType `json:"type"`

	// uri of the catalog. For sql, the PostgreSQL database:
	// postgres://host:5432/database, with options such as
	// ?sslmode=verify-full&user=jetsink, and no password.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	URI string `json:"uri"`

	// warehouse is where the catalog puts tables it creates:
	// s3://<destination.bucket>/<path>. The workers write the data files
	// under the table's location, so it must be in destination.bucket.
	// +kubebuilder:validation:MinLength=6
	// +kubebuilder:validation:MaxLength=1024
	Warehouse string `json:"warehouse"`

	// credentialsSecretRef names a Secret of the sink's namespace whose key
	// password is the catalog's password (PGPASSWORD for sql).
	// +kubebuilder:validation:XValidation:rule="has(self.name) && self.name != ''",message="destination.table.catalog.credentialsSecretRef.name must name a Secret"
	// +optional
	CredentialsSecretRef *corev1.LocalObjectReference `json:"credentialsSecretRef,omitempty"`
}

// BatchSpec bounds a partition's batch: it is written as one Parquet file
// when any limit is reached.
//
// +kubebuilder:validation:XValidation:rule="!has(self.maxBytes) || !has(self.maxBufferedBytes) || quantity(string(self.maxBufferedBytes)).compareTo(quantity(string(self.maxBytes))) >= 0",message="batch.maxBufferedBytes must be at least batch.maxBytes: one batch must fit in the buffer",fieldPath=".maxBufferedBytes"
type BatchSpec struct {
	// maxEvents per file.
	// +kubebuilder:default=10000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000000
	// +optional
	MaxEvents int32 `json:"maxEvents,omitempty"`

	// maxBytes of event data per file, as a quantity (64Mi).
	// +kubebuilder:default="64Mi"
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="batch.maxBytes must be greater than zero"
	// +optional
	MaxBytes *resource.Quantity `json:"maxBytes,omitempty"`

	// maxAge is how long the oldest event of a batch may wait before the
	// batch is written, whatever its size. A batch of an hour (or day) that
	// ended more than maxAge ago is written sooner, once nothing more
	// arrives for it: a replayed backlog does not wait out maxAge.
	// +kubebuilder:default="60s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="batch.maxAge must be greater than zero"
	// +optional
	MaxAge *metav1.Duration `json:"maxAge,omitempty"`

	// maxBufferedBytes caps the event data one worker pod holds across all
	// open batches; above it the largest batches are written first, so
	// memory stays bounded under any backlog. At least maxBytes.
	// +kubebuilder:default="256Mi"
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="batch.maxBufferedBytes must be greater than zero"
	// +optional
	MaxBufferedBytes *resource.Quantity `json:"maxBufferedBytes,omitempty"`
}

// Compression is a Parquet compression codec.
// +kubebuilder:validation:Enum=zstd;snappy;gzip;none
type Compression string

// ParquetSpec sets how files are encoded.
type ParquetSpec struct {
	// compression codec of the files' column chunks.
	// +kubebuilder:default=zstd
	// +optional
	Compression Compression `json:"compression,omitempty"`
}

// TimeGranularity is the width of the time partition.
// +kubebuilder:validation:Enum=hour;day
type TimeGranularity string

// PartitioningSpec sets the object keys' partitions.
type PartitioningSpec struct {
	// timeGranularity of the partition on each event's timestamp (UTC;
	// with schema, its time column): hour gives date=YYYY-MM-DD/hour=HH/,
	// day gives date=YYYY-MM-DD/.
	// +kubebuilder:default=hour
	// +optional
	TimeGranularity TimeGranularity `json:"timeGranularity,omitempty"`
}

// SchemaSpec declares the columns a sink writes. Every file also carries
// three provenance columns after the declared ones: _subject (the NATS
// subject), _stream_seq (the event's sequence in the stream) and
// _received_at (when the stream stored it). Object keys are
// <prefix><partitionBy columns>/date=YYYY-MM-DD/hour=HH/, e.g.
// tenant=acme/region=eu/date=2025-01-31/hour=09/.
//
// The rules that compare columns with each other sit here. The worker
// checks the same at start (config.Schema), and so does the operator on
// every reconcile.
//
// +kubebuilder:validation:XValidation:rule="self.columns.exists(c, c.name == self.time)",message="schema.time must name a declared column of type timestamp",fieldPath=".time"
// +kubebuilder:validation:XValidation:rule="self.columns.all(c, c.name != self.time || c.type == 'timestamp')",message="schema.time must name a column of type timestamp: the event time drives date=/hour= and the event-time window",fieldPath=".time"
// +kubebuilder:validation:XValidation:rule="!has(self.partitionBy) || self.partitionBy.all(p, self.columns.exists(c, c.name == p))",message="schema.partitionBy must name declared columns",fieldPath=".partitionBy"
// +kubebuilder:validation:XValidation:rule="!has(self.partitionBy) || self.columns.all(c, !(c.name in self.partitionBy) || c.type in ['string', 'int64', 'boolean', 'date'])",message="schema.partitionBy must name columns of type string, int64, boolean or date: only they have one exact text form for a directory name",fieldPath=".partitionBy"
// +kubebuilder:validation:XValidation:rule="!has(self.unmapped) || !has(self.unmapped.column) || !self.columns.exists(c, c.name == self.unmapped.column)",message="schema.unmapped.column must not be the name of a declared column",fieldPath=".unmapped.column"
// +kubebuilder:validation:XValidation:rule="self.columns.all(i, c, self.columns.all(j, o, i == j || (has(c.path) && c.path.size() > 0 ? c.path : c.name) != (has(o.path) && o.path.size() > 0 ? o.path : o.name)))",message="schema.columns: no two columns may have the same path (a column without a path has its name as path)",fieldPath=".columns"
// +kubebuilder:validation:XValidation:rule="self.columns.all(c, self.columns.all(o, o.type == 'json' || !(has(c.path) && c.path.size() > 0 ? c.path : c.name).startsWith((has(o.path) && o.path.size() > 0 ? o.path : o.name) + '.')))",message="schema.columns: a column's path may be inside another column's path (tags.site inside tags) only when that column is of type json: a value with columns inside it is an object, and only a json column holds one",fieldPath=".columns"
type SchemaSpec struct {
	// columns of the files, in file order (at most 64). Column names are
	// unique.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Columns []SchemaColumn `json:"columns"`

	// time names the column, of type timestamp, that is the event time: it
	// drives the date=/hour= partition (partitioning.timeGranularity) and
	// the window outside which an event time is refused as poison (a clock
	// or unit mistake). It is always required: an event without it is
	// poison.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	Time string `json:"time"`

	// partitionBy names columns, in order, whose values make the Hive path
	// before date=: [tenant, region] gives tenant=acme/region=eu/date=….
	// Each must be of type string, int64, boolean or date. Values are
	// escaped the Hive way (%XX for /, =, %, control characters and the
	// like), so every value is one directory. These columns are always
	// required: an event without one of them is poison. At most 8.
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=64
	// +listType=set
	// +optional
	PartitionBy []string `json:"partitionBy,omitempty"`

	// unmapped says what happens to an event's top-level fields that no
	// column's path starts with: dropped (the default), or kept together
	// as JSON in one column.
	// +kubebuilder:default={}
	// +optional
	Unmapped UnmappedSpec `json:"unmapped,omitempty"`
}

// SchemaColumn is one declared column.
//
// +kubebuilder:validation:XValidation:rule="!has(self.format) || self.type == 'timestamp'",message="schema.columns.format is only for columns of type timestamp",fieldPath=".format"
type SchemaColumn struct {
	// name of the column: lower-case letters, digits and _, not starting
	// with a digit, at most 64 characters (lower-case, so that engines that
	// fold names and those that do not see the same column). date, hour,
	// _subject, _stream_seq and _received_at are reserved.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]*$`
	// +kubebuilder:validation:XValidation:rule="!(self in ['date', 'hour', '_subject', '_stream_seq', '_received_at'])",message="schema.columns.name must not be date, hour, _subject, _stream_seq or _received_at: every file has these (the time partition and the provenance columns)"
	Name string `json:"name"`

	// path is where the value is in the event: object keys separated by
	// dots, e.g. device or tags.site for {"tags": {"site": "x"}}. Empty
	// means the column's name. A key that itself contains a dot cannot be
	// addressed. No two columns share a path; a path may be inside
	// another column's only when that column is of type json (tags as
	// JSON, and tags.site as a column of its own).
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^([^.]+([.][^.]+)*)?$`
	// +optional
	Path string `json:"path,omitempty"`

	// type of the column: string, int64, double, boolean, timestamp (with
	// format), date (input "YYYY-MM-DD") or json (the value, whatever it
	// is, kept as JSON text). A value of another type makes the event
	// poison.
	// +kubebuilder:validation:Enum=string;int64;double;boolean;timestamp;date;json
	Type string `json:"type"`

	// format of a timestamp column's input: rfc3339 (the default, e.g.
	// 2025-01-31T09:30:00Z), epochSeconds, epochMillis or epochMicros (a
	// number). Only timestamp columns take one.
	// +kubebuilder:validation:Enum=rfc3339;epochSeconds;epochMillis;epochMicros
	// +optional
	Format string `json:"format,omitempty"`

	// required makes an event without the value (absent or null) poison;
	// otherwise the column is null. The time column and the partitionBy
	// columns are always required.
	// +optional
	Required bool `json:"required,omitempty"`
}

// UnmappedAction is what happens to fields no column's path covers.
// +kubebuilder:validation:Enum=drop;keep
type UnmappedAction string

const (
	// UnmappedDrop leaves them out of the files.
	UnmappedDrop UnmappedAction = "drop"
	// UnmappedKeep writes them, as one JSON object, to unmapped.column.
	UnmappedKeep UnmappedAction = "keep"
)

// UnmappedSpec says what happens to the top-level fields of an event that
// no column's path starts with.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.action) && self.action == 'keep') || (has(self.column) && self.column.size() > 0)",message="schema.unmapped.column is required with action keep: it names the JSON column that keeps the unmapped fields",fieldPath=".column"
// +kubebuilder:validation:XValidation:rule="(has(self.action) && self.action == 'keep') || !has(self.column) || self.column.size() == 0",message="schema.unmapped.column is only for action keep",fieldPath=".column"
type UnmappedSpec struct {
	// action is drop (the default: the fields are not written) or keep
	// (they are written, as one JSON object, to column).
	// +kubebuilder:default=drop
	// +optional
	Action UnmappedAction `json:"action,omitempty"`

	// column names the json column that keeps the unmapped fields, with
	// action keep. Like a column's name, it must not be a declared
	// column's name or a reserved one.
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]*$`
	// +kubebuilder:validation:XValidation:rule="!(self in ['date', 'hour', '_subject', '_stream_seq', '_received_at'])",message="schema.unmapped.column must not be date, hour, _subject, _stream_seq or _received_at: every file has these (the time partition and the provenance columns)"
	// +optional
	Column string `json:"column,omitempty"`
}

// WarehouseSinkStatus is what the operator observed of a sink.
type WarehouseSinkStatus struct {
	// observedGeneration is the generation of the spec the operator last
	// acted on. Whether the workers run it yet is the Reconciling
	// condition's business (kstatus reads both).
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// replicas is the number of worker pods (for the /scale subresource).
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// readyReplicas is the number of worker pods ready to consume.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// selector is the label selector of the worker pods, for the /scale
	// subresource (HorizontalPodAutoscaler, KEDA).
	// +optional
	Selector string `json:"selector,omitempty"`

	// consumer reports the JetStream consumer's backlog.
	// +optional
	Consumer *ConsumerStatus `json:"consumer,omitempty"`

	// lastWorkerFailure is the most recent abnormal termination (a non-zero
	// exit code, or the kubelet's OOMKilled) of a container in the sink's
	// current worker pods, as the kubelet reports it in the pod's
	// state.terminated or lastTerminationState. It stays after the worker
	// recovers, so a failure that was restarted away still shows, and is
	// cleared once no current pod has one (after a rollout replaced them).
	// +optional
	LastWorkerFailure *WorkerFailure `json:"lastWorkerFailure,omitempty"`

	// conditions, as kstatus (Flux, Argo CD, kpt, kubectl wait) reads them:
	// Ready (True when the workers run the current spec and consume),
	// Reconciling (True while the operator is still making the sink so: a
	// rollout, a scale, a retry of something that may pass by itself) and
	// Stalled (True when only the user can fix what stops the sink; its
	// reason and message say what).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// WorkerFailure is one abnormal termination of a worker container.
type WorkerFailure struct {
	// pod is the name of the worker pod, in the sink's namespace.
	Pod string `json:"pod"`
	// container is the name of the container that terminated.
	Container string `json:"container"`
	// reason is the kubelet's reason for the termination: OOMKilled when
	// the container used more memory than spec.resources.limits.memory
	// (raise it above batch.maxBufferedBytes plus room for encoding, or
	// lower batch.maxBufferedBytes), Error for any other non-zero exit
	// (the pod's logs, `kubectl logs --previous`, say why).
	// +optional
	Reason string `json:"reason,omitempty"`
	// exitCode of the container: 137 means it was killed (SIGKILL: the
	// kernel's OOM killer, or a liveness probe that failed), 2 that the
	// worker refused its configuration, 1 that it stopped on an error it
	// could not retry; 2 and 1 leave the reason in message and its log.
	ExitCode int32 `json:"exitCode"`
	// message is what the worker said when it stopped (its termination
	// message), e.g. a table it cannot write or a configuration it refuses.
	// +optional
	Message string `json:"message,omitempty"`
	// finishedAt is when the container terminated.
	// +optional
	FinishedAt metav1.Time `json:"finishedAt,omitempty"`
	// restarts is how many times the kubelet has restarted that container
	// of that pod (its restartCount), as last observed.
	Restarts int32 `json:"restarts"`
}

// ConsumerStatus is a snapshot of the consumer's counters.
type ConsumerStatus struct {
	// lag is how many events of the stream are not written to S3 yet:
	// numPending plus numAckPending. Events wait in open batches,
	// delivered but unacknowledged, until their file is written, so
	// numPending alone reads 0 long before the bucket has everything.
	Lag uint64 `json:"lag"`
	// numPending is how many stream messages the consumer has not delivered
	// to any worker yet.
	NumPending uint64 `json:"numPending"`
	// numAckPending is how many delivered messages wait for an ACK.
	NumAckPending int64 `json:"numAckPending"`
	// numRedelivered is how many messages were delivered more than once.
	NumRedelivered int64 `json:"numRedelivered"`
	// name of the durable consumer: spec.source.consumer, or the name the
	// operator derived from the sink's namespace and name.
	// +optional
	Name string `json:"name,omitempty"`
}

// WarehouseSink runs a sink from a NATS JetStream stream to S3 as Parquet
// files: a Deployment of workers that ACK each event only once the file
// holding it is written.
//
// Its name is also the name of the workers' Deployment and, with -metrics
// appended, of their Service, so it must be a DNS-1035 label (lowercase
// letters, digits and -, starting with a letter) of at most 55 characters.
//
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 55",message="metadata.name must be at most 55 characters: the sink's metrics Service is named <name>-metrics"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS-1035 label (lowercase letters, digits and -, starting with a letter, no dots): it names the sink's Service"
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=sink;sinks,categories=jetsink
// +kubebuilder:printcolumn:name="Stream",type=string,JSONPath=`.spec.source.stream`
// +kubebuilder:printcolumn:name="Bucket",type=string,JSONPath=`.spec.destination.bucket`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Available",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Lag",type=integer,JSONPath=`.status.consumer.lag`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Last Failure",type=string,JSONPath=`.status.lastWorkerFailure.reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type WarehouseSink struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired sink.
	Spec WarehouseSinkSpec `json:"spec"`
	// status is what the operator observed.
	// +optional
	Status WarehouseSinkStatus `json:"status,omitempty"`
}

// WarehouseSinkList is a list of WarehouseSinks.
//
// +kubebuilder:object:root=true
type WarehouseSinkList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WarehouseSink `json:"items"`
}

func init() {
	SchemeBuilder.Register(&WarehouseSink{}, &WarehouseSinkList{})
}
