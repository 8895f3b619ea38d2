// Command chartgen renders the Helm chart's generated templates from the
// files controller-gen writes, so the chart and config/ can never drift:
//
//	config/crd/bases/*.yaml  → charts/jetsink/templates/crd/<name>.yaml
//	config/rbac/role.yaml    → charts/jetsink/templates/_rbac_rules.tpl
//
// Each CRD keeps its spec byte for byte; only its metadata is rewritten to
// add the chart's labels and, when crds.keep is set, the annotation
// helm.sh/resource-policy: keep. The whole object is guarded by
// crds.enabled. The role's rules become the named template
// "jetsink.managerRules", which rbac.yaml renders into a ClusterRole or into
// one Role per watched namespace.
//
// `make manifests` runs it after controller-gen; `chartgen -check` (and the
// package's test) fail when the committed templates are stale.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Paths are relative to the repository root.
const (
	crdDir       = "config/crd/bases"
	rolePath     = "config/rbac/role.yaml"
	chartDir     = "charts/jetsink"
	crdOutDir    = chartDir + "/templates/crd"
	rulesOutPath = chartDir + "/templates/_rbac_rules.tpl"
)

func main() {
	root := flag.String("root", ".", "repository root")
	check := flag.Bool("check", false, "fail if the chart's generated templates are stale instead of writing them")
	flag.Parse()
	if err := run(*root, *check); err != nil {
		fmt.Fprintln(os.Stderr, "chartgen:", err)
		os.Exit(1)
	}
}

func run(root string, check bool) error {
	want, err := Generate(root)
	if err != nil {
		return err
	}
	if check {
		return Check(root, want)
	}
	// templates/crd holds generated files only: clear it so a removed CRD
	// leaves no stale template behind.
	if err := os.RemoveAll(filepath.Join(root, crdOutDir)); err != nil {
		return err
	}
	for _, p := range sortedKeys(want) {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, want[p], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Check compares the generated files with those on disk, including files in
// templates/crd that should no longer exist.
func Check(root string, want map[string][]byte) error {
	var stale []string
	for _, p := range sortedKeys(want) {
		got, err := os.ReadFile(filepath.Join(root, p))
		if err != nil || !bytes.Equal(got, want[p]) {
			stale = append(stale, p)
		}
	}
	extra, _ := filepath.Glob(filepath.Join(root, crdOutDir, "*"))
	for _, f := range extra {
		rel, _ := filepath.Rel(root, f)
		if _, ok := want[filepath.ToSlash(rel)]; !ok {
			stale = append(stale, rel+" (not generated)")
		}
	}
	if len(stale) > 0 {
		return fmt.Errorf("stale generated chart templates, run 'make manifests': %s", strings.Join(stale, ", "))
	}
	return nil
}

// Generate returns the generated templates by path relative to root.
func Generate(root string) (map[string][]byte, error) {
	out := map[string][]byte{}
	crds, err := filepath.Glob(filepath.Join(root, crdDir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(crds) == 0 {
		return nil, fmt.Errorf("no CRDs in %s: run controller-gen first", crdDir)
	}
	for _, f := range crds {
		src, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		name, tpl, err := crdTemplate(filepath.ToSlash(mustRel(root, f)), src)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out[crdOutDir+"/"+name+".yaml"] = tpl
	}
	role, err := os.ReadFile(filepath.Join(root, rolePath))
	if err != nil {
		return nil, err
	}
	rules, err := rulesTemplate(role)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rolePath, err)
	}
	out[rulesOutPath] = rules
	return out, nil
}

type objectMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
}

// crdTemplate wraps one CRD in the chart's guard and metadata. The spec is
// copied as text (escaped for the template engine) so that it renders back
// to exactly what controller-gen wrote.
func crdTemplate(srcPath string, src []byte) (string, []byte, error) {
	src = bytes.TrimPrefix(src, []byte("---\n"))
	var meta objectMeta
	if err := yaml.Unmarshal(src, &meta); err != nil {
		return "", nil, err
	}
	if meta.Kind != "CustomResourceDefinition" || meta.Metadata.Name == "" {
		return "", nil, fmt.Errorf("not a named CustomResourceDefinition (kind %q)", meta.Kind)
	}
	// Everything from the top-level spec: key on is copied verbatim.
	lines := strings.SplitAfter(string(src), "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "spec:") {
			start = i
			break
		}
	}
	if start < 0 {
		return "", nil, errors.New("no top-level spec")
	}
	for _, l := range lines[start+1:] {
		if l != "" && l != "\n" && !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "-") {
			return "", nil, fmt.Errorf("unexpected top-level key after spec: %q", strings.TrimSpace(l))
		}
	}
	spec := strings.Join(lines[start:], "")

	var b strings.Builder
	fmt.Fprintf(&b, "{{- /* Code generated by hack/chartgen from %s. DO NOT EDIT. */ -}}\n", srcPath)
	b.WriteString("{{- if .Values.crds.enabled }}\n")
	fmt.Fprintf(&b, "apiVersion: %s\nkind: %s\nmetadata:\n  name: %s\n", meta.APIVersion, meta.Kind, meta.Metadata.Name)
	b.WriteString("  annotations:\n")
	for _, k := range sortedKeys(meta.Metadata.Annotations) {
		fmt.Fprintf(&b, "    %s: %s\n", quote(k), quote(meta.Metadata.Annotations[k]))
	}
	b.WriteString("    {{- if .Values.crds.keep }}\n    helm.sh/resource-policy: keep\n    {{- end }}\n")
	b.WriteString("  labels:\n")
	for _, k := range sortedKeys(meta.Metadata.Labels) {
		fmt.Fprintf(&b, "    %s: %s\n", quote(k), quote(meta.Metadata.Labels[k]))
	}
	b.WriteString("    {{- include \"jetsink.labels\" . | nindent 4 }}\n")
	b.WriteString(escape(spec))
	if !strings.HasSuffix(spec, "\n") {
		b.WriteString("\n")
	}
	b.WriteString("{{- end }}\n")
	return meta.Metadata.Name, []byte(b.String()), nil
}

// rulesTemplate turns the generated ClusterRole's rules into the named
// template "jetsink.managerRules" (a YAML list, unindented).
func rulesTemplate(src []byte) ([]byte, error) {
	// controller-gen writes a Role per namespace after the ClusterRole when
	// a marker names a namespace; the chart has no place for those yet, so
	// refuse rather than drop them.
	if docs := strings.Split(strings.TrimPrefix(string(src), "---\n"), "\n---\n"); len(docs) > 1 {
		return nil, fmt.Errorf("%d objects, want only the ClusterRole: teach chartgen about namespaced roles", len(docs))
	}
	var role struct {
		Kind  string            `json:"kind"`
		Rules []json.RawMessage `json:"rules"`
	}
	if err := yaml.Unmarshal(src, &role); err != nil {
		return nil, err
	}
	if role.Kind != "ClusterRole" || len(role.Rules) == 0 {
		return nil, fmt.Errorf("want a ClusterRole with rules, got kind %q with %d rules", role.Kind, len(role.Rules))
	}
	rules, err := yaml.Marshal(struct {
		Rules []json.RawMessage `json:"rules"`
	}{role.Rules})
	if err != nil {
		return nil, err
	}
	// Drop the "rules:" key: the template is the list itself.
	list := strings.TrimPrefix(string(rules), "rules:\n")
	var b strings.Builder
	fmt.Fprintf(&b, "{{- /* Code generated by hack/chartgen from %s. DO NOT EDIT. */ -}}\n", rolePath)
	b.WriteString("{{/* jetsink.managerRules are the manager's RBAC rules, from the controller's markers. */}}\n")
	b.WriteString("{{- define \"jetsink.managerRules\" -}}\n")
	b.WriteString(escape(list))
	b.WriteString("{{- end }}\n")
	return []byte(b.String()), nil
}

// escape makes text render literally through text/template: only "{{"
// starts an action.
func escape(s string) string {
	return strings.ReplaceAll(s, "{{", `{{ "{{" }}`)
}

// quote renders a string as a YAML (JSON-compatible) double-quoted scalar.
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func mustRel(root, p string) string {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return p
	}
	return rel
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
