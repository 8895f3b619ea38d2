package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestChartIsCurrent fails when the committed chart templates are not what
// chartgen renders from config/ (`make manifests` was not run).
func TestChartIsCurrent(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	want, err := Generate(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(root, want); err != nil {
		t.Fatal(err)
	}
}

// TestCheckFindsStaleTemplates: a changed CRD, a hand edit or a leftover
// template are each reported.
func TestCheckFindsStaleTemplates(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(crdDir+"/x.yaml", "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: xs.example.com\nspec:\n  group: example.com\n  names:\n    description: uses {{ braces }}\n")
	write(rolePath, "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: m\nrules:\n- apiGroups: [\"\"]\n  resources: [secrets]\n  verbs: [get]\n")
	if err := run(root, false); err != nil {
		t.Fatal(err)
	}
	if err := run(root, true); err != nil {
		t.Fatalf("fresh output reported stale: %v", err)
	}
	crd, _ := os.ReadFile(filepath.Join(root, crdOutDir, "xs.example.com.yaml"))
	if !strings.Contains(string(crd), `uses {{ "{{" }} braces }}`) || !strings.Contains(string(crd), "{{- if .Values.crds.enabled }}") {
		t.Errorf("CRD template not escaped or not guarded:\n%s", crd)
	}

	write(crdOutDir+"/old.yaml", "stale")
	if err := run(root, true); err == nil || !strings.Contains(err.Error(), "old.yaml") {
		t.Errorf("leftover template not reported: %v", err)
	}
	write(rolePath, "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: m\nrules:\n- apiGroups: [\"\"]\n  resources: [secrets]\n  verbs: [get, list]\n")
	if err := run(root, true); err == nil || !strings.Contains(err.Error(), "_rbac_rules.tpl") {
		t.Errorf("changed role not reported: %v", err)
	}
	if err := run(root, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, crdOutDir, "old.yaml")); !os.IsNotExist(err) {
		t.Errorf("regeneration left old.yaml behind: %v", err)
	}

	// A second object in role.yaml would be silently dropped: refuse it.
	write(rolePath, "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: m\nrules:\n- apiGroups: [\"\"]\n  resources: [secrets]\n  verbs: [get]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: m\n  namespace: x\nrules: []\n")
	if err := run(root, false); err == nil {
		t.Error("a role.yaml with two objects was accepted")
	}
}
