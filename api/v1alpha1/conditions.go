package v1alpha1

// Condition types of a WarehouseSink, the ones kstatus reads: tools such as
// Flux, Argo CD and `kubectl wait --for=condition=Ready` judge a sink by
// them and by status.observedGeneration.
const (
	// ConditionReady is True when the workers run the current spec, are
	// available, and consume from a consumer the sink owns.
	ConditionReady = "Ready"
	// ConditionReconciling is True while the operator is still bringing the
	// sink to its spec: a rollout or scale under way, or a retry of a
	// failure that may pass by itself (NATS or S3 unreachable).
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when the sink cannot progress until its
	// owner fixes something; its reason and message say what.
	ConditionStalled = "Stalled"
)

// Annotations a user may set on a sink.
const (
	// AnnotationAdoptConsumer set to "true" lets the sink take over an
	// existing consumer whose metadata does not name it as the owner (one
	// made by hand, or by another tool). The consumer is then rewritten to
	// match the spec and marked as the sink's.
	AnnotationAdoptConsumer = "jetsink.dev/adopt-consumer"
)

// Condition reasons, PascalCase as metav1.Condition requires.
const (
	// Ready, and the end of Reconciling.
	ReasonAvailable  = "Available"
	ReasonRolledOut  = "RolledOut"
	ReasonAsExpected = "AsExpected"

	// Reconciling, or Ready False while a retry may still succeed.
	ReasonRollingOut         = "RollingOut"
	ReasonWorkersUnavailable = "WorkersUnavailable"
	ReasonNATSUnreachable    = "NATSUnreachable"
	ReasonStreamNotFound     = "StreamNotFound"
	ReasonConsumerFailed     = "ConsumerFailed"
	ReasonS3Unreachable      = "S3Unreachable"
	ReasonCatalogUnreachable = "CatalogUnreachable"
	ReasonReconcileFailed    = "ReconcileFailed"

	// Ready False while the workers are unavailable because a container of
	// a worker pod was killed for going over its memory limit, or exited
	// with an error, and the kubelet restarts it (CrashLoopBackOff). Not
	// Stalled: a change of the pods wakes the sink. status.lastWorkerFailure
	// names the pod; each new failure is a Warning Event of the same reason.
	ReasonWorkerOOMKilled = "WorkerOOMKilled"
	ReasonWorkerCrashed   = "WorkerCrashed"

	// Ready False on purpose.
	ReasonSuspended    = "Suspended"
	ReasonScaledToZero = "ScaledToZero"

	// Stalled: only the user can fix these.
	ReasonInvalidSpec              = "InvalidSpec"
	ReasonImageNotAllowed          = "ImageNotAllowed"
	ReasonSecretNotFound           = "SecretNotFound"
	ReasonSecretKeyMissing         = "SecretKeyMissing"
	ReasonConsumerOwnedElsewhere   = "ConsumerOwnedElsewhere"
	ReasonConsumerRefused          = "ConsumerRefused"
	ReasonNATSAuthFailed           = "NATSAuthFailed"
	ReasonNameConflict             = "NameConflict"
	ReasonS3AccessDenied           = "S3AccessDenied"
	ReasonBucketNotFound           = "BucketNotFound"
	ReasonCatalogAuthFailed        = "CatalogAuthFailed"
	ReasonProgressDeadlineExceeded = "ProgressDeadlineExceeded"
)
