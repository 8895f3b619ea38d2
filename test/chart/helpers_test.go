// Package chart tests the install paths platform teams use: the Helm chart
// (lint, render, install/upgrade/uninstall on a real API server) and the
// kustomize overlays in config/, and that the RBAC both grant is exactly
// what the controller needs. The tools (helm, kubectl, kube-apiserver,
// etcd) are the real binaries `make tools` builds into bin/.
package chart

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
)

const module = "github.com/jetsink/jetsink"

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	utilruntime.Must(jetsinkv1.AddToScheme(scheme))
}

var (
	rootOnce sync.Once
	rootDir  string
)

// repoRoot is the directory of the module's go.mod, found upwards from the
// test's working directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			return
		}
		for {
			if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module "+module+"\n")) {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				return
			}
			dir = parent
		}
	})
	if rootDir == "" {
		t.Fatal("cannot find the repository root (go.mod of " + module + ")")
	}
	return rootDir
}

func chartDir(t testing.TB) string { return filepath.Join(repoRoot(t), "charts", "jetsink") }

// tool returns bin/<name>, failing the test with what to run when it is
// missing: these tests must not pass by skipping.
func tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not found: run `make tools` (or ./hack/tools/install.sh %s) first", p, name)
	}
	return p
}

// run runs a command and returns its stdout, failing the test with its
// output on error.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := tryRun(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(name), strings.Join(args, " "), err)
	}
	return out
}

// tryRun runs a command; its error carries stderr.
func tryRun(name string, args ...string) (string, error) {
	return tryRunStdin("", name, args...)
}

// tryRunStdin runs a command with stdin; its error carries stderr.
func tryRunStdin(stdin, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), toolEnv...)
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.New(err.Error() + ": " + stderr.String() + stdout.String())
	}
	return stdout.String(), nil
}

// toolEnv keeps helm's cache, config and data and kubectl's discovery cache
// out of the user's home.
var toolEnv []string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "jetsink-chart-helm-")
	if err != nil {
		panic(err)
	}
	toolEnv = []string{
		"HELM_CACHE_HOME=" + filepath.Join(dir, "cache"),
		"HELM_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"HELM_DATA_HOME=" + filepath.Join(dir, "data"),
		"KUBECACHEDIR=" + filepath.Join(dir, "kube-cache"),
	}
	code := m.Run()
	stopEnv()
	os.RemoveAll(dir)
	os.Exit(code)
}

// helmTemplate renders the chart with the given extra arguments.
func helmTemplate(t testing.TB, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out := run(t, tool(t, "helm"), append([]string{"template", "jetsink", chartDir(t), "--namespace", "jetsink-system"}, args...)...)
	return parseDocs(t, out)
}

// parseDocs splits a multi-document YAML stream into objects, dropping
// empty documents.
func parseDocs(t testing.TB, s string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(s)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("split YAML: %v", err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("parse rendered YAML: %v\n%s", err, doc)
		}
		if len(u.Object) == 0 {
			continue
		}
		objs = append(objs, u)
	}
	return objs
}

// strictDecode decodes an object into its typed form, refusing unknown
// fields: a misspelt field in a template fails here, not on a cluster.
func strictDecode(t testing.TB, u *unstructured.Unstructured, into runtime.Object) {
	t.Helper()
	b, err := u.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	s := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Strict: true})
	if _, _, err := s.Decode(b, nil, into); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

// find returns the objects of a kind.
func find(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// one returns the single object of a kind, failing otherwise.
func one(t testing.TB, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	found := find(objs, kind)
	if len(found) != 1 {
		t.Fatalf("want one %s, rendered %d", kind, len(found))
	}
	return found[0]
}
