package workload

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// WorkerCommand is the worker's entrypoint in the image (the operator's
// own image ships every binary).
const WorkerCommand = "sinkworker"

// TableWorkerCommand is the worker built with Iceberg tables, run by sinks
// with destination.table. It is a binary of its own because iceberg-go's
// packages cost every process that links them 50 MiB of resident memory at
// start, whether it writes a table or not.
const TableWorkerCommand = "sinkworker-iceberg"

// workerUID is the non-root user the worker runs as (distroless nonroot).
const workerUID = 65532

// Credentials are the resolved Secrets of a sink, nil when the sink names
// none. The controller fetches them (see SecretUses); the builder reads only
// the data of the keys the workers use, to hash it into the pod template.
type Credentials struct {
	NATS, S3, NATSTLS, S3TLS, Catalog *corev1.Secret
}

// SecretUse is one Secret the workers read: the reference, the spec field
// that holds it (for messages), and the variables its keys fill.
type SecretUse struct {
	Ref   *corev1.LocalObjectReference
	Field string
	Vars  []config.SecretEnv
	slot  func(*Credentials) **corev1.Secret
}

// Set records the resolved Secret for u.
func (c *Credentials) Set(u SecretUse, s *corev1.Secret) { *u.slot(c) = s }

// SecretUses lists the Secrets the sink names, in a fixed order.
func SecretUses(sink *jetsinkv1.WarehouseSink) []SecretUse {
	all := []SecretUse{
		{sink.Spec.Source.CredentialsSecretRef, "source.credentialsSecretRef", config.NATSSecretEnv,
			func(c *Credentials) **corev1.Secret { return &c.NATS }},
		{sink.Spec.Destination.CredentialsSecretRef, "destination.credentialsSecretRef", config.S3SecretEnv,
			func(c *Credentials) **corev1.Secret { return &c.S3 }},
		{tlsRef(sink.Spec.Source.TLS), "source.tls.secretRef", config.NATSTLSSecretEnv,
			func(c *Credentials) **corev1.Secret { return &c.NATSTLS }},
		{tlsRef(sink.Spec.Destination.TLS), "destination.tls.secretRef", config.S3TLSSecretEnv,
			func(c *Credentials) **corev1.Secret { return &c.S3TLS }},
		{catalogRef(sink.Spec.Destination.Table), "destination.table.catalog.credentialsSecretRef", config.CatalogSecretEnv,
			func(c *Credentials) **corev1.Secret { return &c.Catalog }},
	}
	var out []SecretUse
	for _, u := range all {
		if u.Ref != nil {
			out = append(out, u)
		}
	}
	return out
}

func tlsRef(t *jetsinkv1.TLSSpec) *corev1.LocalObjectReference {
	if t == nil {
		return nil
	}
	return &t.SecretRef
}

func catalogRef(t *jetsinkv1.TableSpec) *corev1.LocalObjectReference {
	if t == nil {
		return nil
	}
	return t.Catalog.CredentialsSecretRef
}

// Deployment returns the Deployment running the sink's workers. image is
// used when the sink names none.
func Deployment(sink *jetsinkv1.WarehouseSink, image string, creds Credentials) *appsv1.Deployment {
	spec := sink.Spec
	if spec.Image != "" {
		image = spec.Image
	}
	cfg := WorkerConfig(sink)
	command := WorkerCommand
	if cfg.Table != nil {
		command = TableWorkerCommand
	}

	podLabels := Labels(sink)
	for k, v := range spec.PodLabels {
		if _, reserved := podLabels[k]; !reserved {
			podLabels[k] = v
		}
	}
	podAnnotations := map[string]string{}
	for k, v := range spec.PodAnnotations {
		podAnnotations[k] = v
	}
	if h := credentialsHash(sink, creds); h != "" {
		podAnnotations[AnnotationCredentialsHash] = h
	}

	probe := func(path string, period int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromString("metrics"),
			}},
			PeriodSeconds:    period,
			FailureThreshold: 3,
		}
	}

	container := corev1.Container{
		Name:            "sinkworker",
		Image:           image,
		ImagePullPolicy: spec.ImagePullPolicy,
		Command:         []string{command},
		Env:             workerEnv(cfg, sink, creds),
		Ports: []corev1.ContainerPort{{
			Name: "metrics", ContainerPort: config.MetricsPort, Protocol: corev1.ProtocolTCP,
		}},
		Resources:      spec.Resources,
		LivenessProbe:  probe("/healthz", 10),
		ReadinessProbe: probe("/readyz", 5),
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To[int64](workerUID),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts: []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}},
	}

	d := &appsv1.Deployment{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      sink.Name,
			Namespace: sink.Namespace,
			Labels:    Labels(sink),
		},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(Replicas(sink)),
			Selector: &metav1.LabelSelector{MatchLabels: SelectorLabels(sink)},
			// A rolling update that never drops below the desired count:
			// the old pod drains while its replacement already consumes.
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromInt32(1)),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: podAnnotations},
				Spec: corev1.PodSpec{
					Containers:                    []corev1.Container{container},
					TerminationGracePeriodSeconds: ptr.To(GracePeriodSeconds(sink)),
					ServiceAccountName:            spec.ServiceAccountName,
					// The workers never call the Kubernetes API and never
					// look up Services by env: neither a token nor
					// service links belong in their pods.
					AutomountServiceAccountToken: ptr.To(false),
					EnableServiceLinks:           ptr.To(false),
					ImagePullSecrets:             spec.ImagePullSecrets,
					PriorityClassName:            spec.PriorityClassName,
					NodeSelector:                 spec.NodeSelector,
					Tolerations:                  spec.Tolerations,
					Affinity:                     spec.Affinity,
					TopologySpreadConstraints:    topologySpread(sink),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Volumes: []corev1.Volume{{
						Name:         "tmp",
						VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
					}},
				},
			},
		},
	}
	d.Annotations = map[string]string{AnnotationSpecHash: specHash(d.Spec)}
	return d
}

// GracePeriodSeconds is ceil(spec.shutdownTimeout) + GracePeriodMargin.
func GracePeriodSeconds(sink *jetsinkv1.WarehouseSink) int64 {
	timeout := WorkerConfig(sink).ShutdownTimeout
	return int64(math.Ceil(timeout.Seconds())) + GracePeriodMargin
}

// workerEnv is the sink's extra env (proxies and the like; the schema
// refuses the worker's own names), then the worker's configuration, then
// the credentials as references into the user's Secrets (never copied into
// the pod spec). Later entries win, so nothing the user adds can override
// what the operator renders.
func workerEnv(cfg config.Config, sink *jetsinkv1.WarehouseSink, creds Credentials) []corev1.EnvVar {
	env := append([]corev1.EnvVar(nil), sink.Spec.Env...)
	for _, e := range cfg.Environ() {
		env = append(env, corev1.EnvVar{Name: e.Name, Value: e.Value})
	}
	for _, u := range SecretUses(sink) {
		env = append(env, secretEnv(u.Ref.Name, u.Vars)...)
	}
	return env
}

// topologySpread is the sink's constraints, each selecting the sink's own
// workers when it names no selector (the usual intent: spread these pods).
func topologySpread(sink *jetsinkv1.WarehouseSink) []corev1.TopologySpreadConstraint {
	out := make([]corev1.TopologySpreadConstraint, 0, len(sink.Spec.TopologySpreadConstraints))
	for _, c := range sink.Spec.TopologySpreadConstraints {
		if c.LabelSelector == nil {
			c.LabelSelector = &metav1.LabelSelector{MatchLabels: SelectorLabels(sink)}
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func secretEnv(secret string, vars []config.SecretEnv) []corev1.EnvVar {
	out := make([]corev1.EnvVar, 0, len(vars))
	for _, v := range vars {
		out = append(out, corev1.EnvVar{Name: v.Env, ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: secret},
				Key:                  v.Key,
				Optional:             ptr.To(v.Optional),
			},
		}})
	}
	return out
}

// credentialsHash hashes the data of exactly the keys the workers read
// (with the Secrets' names), empty when the sink reads no Secret.
func credentialsHash(sink *jetsinkv1.WarehouseSink, creds Credentials) string {
	uses := SecretUses(sink)
	if len(uses) == 0 {
		return ""
	}
	h := sha256.New()
	for _, u := range uses {
		fmt.Fprintf(h, "%s\x00", u.Ref.Name)
		secret := *u.slot(&creds)
		for _, v := range u.Vars {
			var data []byte
			if secret != nil {
				data = secret.Data[v.Key]
			}
			fmt.Fprintf(h, "%s\x00%d\x00", v.Key, len(data))
			h.Write(data)
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
