package chart

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
)

// kubebuilderProject is the part of kubebuilder's PROJECT file (version 3)
// this repository fills in.
type kubebuilderProject struct {
	Domain      string   `json:"domain"`
	Layout      []string `json:"layout"`
	ProjectName string   `json:"projectName"`
	Repo        string   `json:"repo"`
	Resources   []struct {
		API struct {
			CRDVersion string `json:"crdVersion"`
			Namespaced bool   `json:"namespaced"`
		} `json:"api"`
		Controller bool   `json:"controller"`
		Domain     string `json:"domain"`
		Group      string `json:"group,omitempty"`
		Kind       string `json:"kind"`
		Path       string `json:"path"`
		Version    string `json:"version"`
	} `json:"resources"`
	Version string `json:"version"`
}

// TestProjectFileMatchesAPI: kubebuilder scaffolds from PROJECT, so it must
// describe the API the repository serves: the group kubebuilder derives
// (<group>.<domain>, or the domain alone), the version, the kind, the
// package and the CRD's scope.
func TestProjectFileMatchesAPI(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "PROJECT"))
	if err != nil {
		t.Fatal(err)
	}
	var p kubebuilderProject
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		t.Fatalf("PROJECT: %v", err)
	}
	if p.Version != "3" || !reflect.DeepEqual(p.Layout, []string{"go.kubebuilder.io/v4"}) || p.Repo != module || p.Domain == "" {
		t.Errorf("PROJECT version %q layout %v repo %q domain %q", p.Version, p.Layout, p.Repo, p.Domain)
	}
	if len(p.Resources) != 1 {
		t.Fatalf("PROJECT resources: %d, want 1", len(p.Resources))
	}
	r := p.Resources[0]
	group := r.Domain
	if r.Group != "" {
		group = r.Group + "." + r.Domain
	}
	gvk := schema.GroupVersionKind{Group: group, Version: r.Version, Kind: r.Kind}
	if want := jetsinkv1.GroupVersion.WithKind("WarehouseSink"); gvk != want || !scheme.Recognizes(gvk) {
		t.Errorf("PROJECT resource %v, the API serves %v", gvk, want)
	}
	if r.Path != module+"/api/"+r.Version || !r.Controller || r.API.CRDVersion != "v1" {
		t.Errorf("PROJECT resource path %q controller %v crdVersion %q", r.Path, r.Controller, r.API.CRDVersion)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	b, err = os.ReadFile(filepath.Join(repoRoot(t), "config", "crd", "bases", "jetsink.dev_warehousesinks.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, crd); err != nil {
		t.Fatal(err)
	}
	if r.API.Namespaced != (crd.Spec.Scope == apiextensionsv1.NamespaceScoped) {
		t.Errorf("PROJECT namespaced %v, the CRD's scope %s", r.API.Namespaced, crd.Spec.Scope)
	}
}
