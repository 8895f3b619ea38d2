package workload

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// ServiceName is the name of the sink's metrics Service.
func ServiceName(sink *jetsinkv1.WarehouseSink) string {
	return sink.Name + "-metrics"
}

// Service returns the Service exposing the workers' Prometheus metrics.
func Service(sink *jetsinkv1.WarehouseSink) *corev1.Service {
	s := &corev1.Service{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      ServiceName(sink),
			Namespace: sink.Namespace,
			Labels:    Labels(sink),
		},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: SelectorLabels(sink),
			Ports: []corev1.ServicePort{{
				Name:       "metrics",
				Port:       config.MetricsPort,
				TargetPort: intstr.FromString("metrics"),
				Protocol:   corev1.ProtocolTCP,
			}},
		},
	}
	s.Annotations = map[string]string{AnnotationSpecHash: specHash(s.Spec)}
	return s
}
