// Package v1alpha1 holds the WarehouseSink API: the one resource a user
// writes to run a sink from a JetStream stream to an S3 bucket. The types'
// doc comments are what `kubectl explain` shows; their markers become the
// CRD's schema, defaults and validation (make manifests).
//
// +kubebuilder:object:generate=true
// +groupName=jetsink.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the WarehouseSink API.
	GroupVersion = schema.GroupVersion{Group: "jetsink.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the API's types with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
