package v1alpha1

// Condition types of a WarehouseSink.
const (
	// ConditionReady is True when the workers are available and the
	// consumer exists.
	ConditionReady = "Ready"
	// ConditionProgressing is True while a rollout or scale is under way.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when something the user must fix stops the
	// sink; its reason and message say what.
	ConditionDegraded = "Degraded"
)

// Condition reasons, PascalCase as metav1.Condition requires.
const (
	ReasonAvailable          = "Available"
	ReasonRollingOut         = "RollingOut"
	ReasonRolledOut          = "RolledOut"
	ReasonScaledToZero       = "ScaledToZero"
	ReasonWorkersUnavailable = "WorkersUnavailable"
	ReasonSecretNotFound     = "SecretNotFound"
	ReasonSecretKeyMissing   = "SecretKeyMissing"
	ReasonNATSUnreachable    = "NATSUnreachable"
	ReasonStreamNotFound     = "StreamNotFound"
	ReasonConsumerFailed     = "ConsumerFailed"
	ReasonNameConflict       = "NameConflict"
	ReasonS3AccessDenied     = "S3AccessDenied"
	ReasonBucketNotFound     = "BucketNotFound"
	ReasonS3Unreachable      = "S3Unreachable"
	ReasonReconcileFailed    = "ReconcileFailed"
	ReasonAsExpected         = "AsExpected"
)
