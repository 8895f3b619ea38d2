package chart

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// namespacedValues is the non-default values file: namespaced mode,
// ServiceMonitor on, CRDs off, and every other knob moved off its default.
const namespacedValues = "testdata/namespaced-values.yaml"

func TestHelmLint(t *testing.T) {
	helm := tool(t, "helm")
	for _, args := range [][]string{
		nil,
		{"--values", namespacedValues},
	} {
		out := run(t, helm, append([]string{"lint", "--strict", chartDir(t)}, args...)...)
		if !strings.Contains(out, "0 chart(s) failed") {
			t.Errorf("helm lint %v:\n%s", args, out)
		}
	}
}

// TestTemplateDefaults renders the chart with its default values: cluster
// mode, the CRD (kept on uninstall), the manager as non-root on a read-only
// root filesystem running its own image as the workers' default, with
// authenticated HTTPS metrics and a leader-election Lease of its own.
func TestTemplateDefaults(t *testing.T) {
	objs := helmTemplate(t)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
		if o.GetKind() != "CustomResourceDefinition" && o.GetKind() != "ClusterRole" && o.GetKind() != "ClusterRoleBinding" &&
			o.GetNamespace() != "jetsink-system" {
			t.Errorf("%s %s in namespace %q, want the release namespace", o.GetKind(), o.GetName(), o.GetNamespace())
		}
	}
	want := map[string]int{
		"CustomResourceDefinition": 1, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "Service": 1, "Deployment": 1, // Role: leader election
		"ClusterRole": 3, "ClusterRoleBinding": 2, // the manager's, metrics auth (bound), metrics reader (not bound)
	}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("rendered kinds %v, want %v", kinds, want)
	}

	crd := &apiextensionsv1.CustomResourceDefinition{}
	strictDecode(t, one(t, objs, "CustomResourceDefinition"), crd)
	if got := crd.Annotations["helm.sh/resource-policy"]; got != "keep" {
		t.Errorf("CRD resource-policy annotation %q, want keep (crds.keep defaults to true)", got)
	}
	if crd.Name != "warehousesinks.jetsink.dev" {
		t.Errorf("CRD name %q", crd.Name)
	}

	dep := &appsv1.Deployment{}
	strictDecode(t, one(t, objs, "Deployment"), dep)
	appVersion := chartAppVersion(t)
	c := dep.Spec.Template.Spec.Containers[0]
	if want := "ghcr.io/jetsink/jetsink:" + appVersion; c.Image != want {
		t.Errorf("image %q, want %q (tag defaults to appVersion)", c.Image, want)
	}
	if !slices.Equal(c.Command, []string{"manager"}) {
		t.Errorf("command %v, want [manager]", c.Command)
	}
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"--worker-image=ghcr.io/jetsink/jetsink:" + appVersion, "--leader-elect",
		"--metrics-bind-address=:8443", "--metrics-secure=true", "--health-probe-bind-address=:8081",
		"--leader-election-id=jetsink-manager.jetsink.dev", "--leader-elect-lease-duration=15s",
		"--leader-elect-renew-deadline=10s", "--leader-elect-retry-period=2s", "--allowed-worker-images=*"} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if strings.Contains(args, "--namespaces") {
		t.Errorf("args %q: cluster mode must not restrict namespaces", args)
	}
	assertHardened(t, dep)
	if sa := one(t, objs, "ServiceAccount"); dep.Spec.Template.Spec.ServiceAccountName != sa.GetName() {
		t.Errorf("pod runs as %q, the chart creates ServiceAccount %q", dep.Spec.Template.Spec.ServiceAccountName, sa.GetName())
	}

	svc := &corev1.Service{}
	strictDecode(t, one(t, objs, "Service"), svc)
	if !reflect.DeepEqual(svc.Spec.Selector, dep.Spec.Selector.MatchLabels) {
		t.Errorf("metrics Service selects %v, the manager pods are %v", svc.Spec.Selector, dep.Spec.Selector.MatchLabels)
	}
	if p := svc.Spec.Ports[0]; p.Port != 8443 || p.TargetPort.StrVal != "metrics" || ptr.Deref(p.AppProtocol, "") != "https" ||
		containerPort(t, c, "metrics") != 8443 {
		t.Errorf("metrics Service port %+v, container ports %v: want https on 8443", p, c.Ports)
	}

	cr := &rbacv1.ClusterRole{}
	strictDecode(t, named(t, objs, "ClusterRole", "jetsink-manager"), cr)
	if want := generatedRules(t); !reflect.DeepEqual(cr.Rules, want) {
		t.Errorf("ClusterRole rules differ from config/rbac/role.yaml:\n got %v\nwant %v", cr.Rules, want)
	}
	crb := &rbacv1.ClusterRoleBinding{}
	strictDecode(t, named(t, objs, "ClusterRoleBinding", "jetsink-manager"), crb)
	if crb.RoleRef.Name != cr.Name || len(crb.Subjects) != 1 || crb.Subjects[0].Name != dep.Spec.Template.Spec.ServiceAccountName ||
		crb.Subjects[0].Namespace != "jetsink-system" {
		t.Errorf("ClusterRoleBinding %+v does not bind %s to the manager's ServiceAccount", crb, cr.Name)
	}
	assertMetricsRBAC(t, objs, "jetsink", "jetsink-system", dep.Spec.Template.Spec.ServiceAccountName)
	assertLeastPrivilege(t, objs)
}

// assertMetricsRBAC: with metrics.secure the manager's ServiceAccount may
// create TokenReviews and SubjectAccessReviews (and nothing more through
// that binding), and a reader ClusterRole for scrapers exists, bound to no one.
func assertMetricsRBAC(t *testing.T, objs []*unstructured.Unstructured, fullname, ns, sa string) {
	t.Helper()
	auth := &rbacv1.ClusterRole{}
	strictDecode(t, named(t, objs, "ClusterRole", fullname+"-metrics-auth"), auth)
	if want := metricsAuthRules; !reflect.DeepEqual(auth.Rules, want) {
		t.Errorf("metrics-auth rules %v, want %v", auth.Rules, want)
	}
	b := &rbacv1.ClusterRoleBinding{}
	strictDecode(t, named(t, objs, "ClusterRoleBinding", fullname+"-metrics-auth"), b)
	if b.RoleRef.Name != auth.Name || b.RoleRef.Kind != "ClusterRole" || len(b.Subjects) != 1 ||
		b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != sa || b.Subjects[0].Namespace != ns {
		t.Errorf("metrics-auth binding %+v, want ServiceAccount %s/%s", b, ns, sa)
	}
	reader := &rbacv1.ClusterRole{}
	strictDecode(t, named(t, objs, "ClusterRole", fullname+"-metrics-reader"), reader)
	if want := metricsReaderRules; !reflect.DeepEqual(reader.Rules, want) {
		t.Errorf("metrics-reader rules %v, want %v", reader.Rules, want)
	}
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, u := range find(objs, kind) {
			if ref, _, _ := unstructured.NestedString(u.Object, "roleRef", "name"); ref == reader.Name {
				t.Errorf("%s %s binds the metrics reader role: the chart grants it to no one", kind, u.GetName())
			}
		}
	}
}

var (
	metricsAuthRules = []rbacv1.PolicyRule{
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
		{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
	}
	metricsReaderRules = []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}
)

// TestTemplateNamespaced renders the non-default values file and checks
// that each value reached the objects.
func TestTemplateNamespaced(t *testing.T) {
	objs := helmTemplate(t, "--values", namespacedValues)
	if n := len(find(objs, "CustomResourceDefinition")); n != 0 {
		t.Errorf("crds.enabled=false rendered %d CustomResourceDefinition", n)
	}
	// Nothing cluster-wide but what secure metrics need: reviews cannot
	// be granted by a Role.
	for _, kind := range []string{"ClusterRole", "ClusterRoleBinding"} {
		for _, u := range find(objs, kind) {
			if !strings.HasSuffix(u.GetName(), "-metrics-auth") && !strings.HasSuffix(u.GetName(), "-metrics-reader") {
				t.Errorf("namespaced mode rendered %s %s", kind, u.GetName())
			}
		}
	}
	assertMetricsRBAC(t, objs, "jetsink", "jetsink-system", "jetsink-ops")

	// A Role + RoleBinding with the generated rules in each watched
	// namespace, and the leader-election Role in the release namespace.
	rules := generatedRules(t)
	roles := map[string]bool{}
	for _, u := range find(objs, "Role") {
		r := &rbacv1.Role{}
		strictDecode(t, u, r)
		if strings.HasSuffix(r.Name, "-leader-election") {
			if r.Namespace != "jetsink-system" {
				t.Errorf("leader-election Role in %q", r.Namespace)
			}
			continue
		}
		roles[r.Namespace] = true
		if !reflect.DeepEqual(r.Rules, rules) {
			t.Errorf("Role %s/%s rules differ from config/rbac/role.yaml", r.Namespace, r.Name)
		}
	}
	if want := map[string]bool{"analytics": true, "staging": true}; !reflect.DeepEqual(roles, want) {
		t.Errorf("manager Roles in namespaces %v, want %v", roles, want)
	}
	bound := map[string]bool{}
	for _, u := range find(objs, "RoleBinding") {
		rb := &rbacv1.RoleBinding{}
		strictDecode(t, u, rb)
		if len(rb.Subjects) != 1 || rb.Subjects[0].Name != "jetsink-ops" || rb.Subjects[0].Namespace != "jetsink-system" {
			t.Errorf("RoleBinding %s/%s binds %+v, want ServiceAccount jetsink-system/jetsink-ops", rb.Namespace, rb.Name, rb.Subjects)
		}
		bound[rb.Namespace] = true
	}
	if want := map[string]bool{"analytics": true, "staging": true, "jetsink-system": true}; !reflect.DeepEqual(bound, want) {
		t.Errorf("RoleBindings in %v, want %v", bound, want)
	}

	sa := &corev1.ServiceAccount{}
	strictDecode(t, one(t, objs, "ServiceAccount"), sa)
	if sa.Name != "jetsink-ops" || sa.Annotations["eks.amazonaws.com/role-arn"] != "arn:aws:iam::123456789012:role/jetsink" {
		t.Errorf("ServiceAccount %s annotations %v, want the IRSA role from the values", sa.Name, sa.Annotations)
	}

	dep := &appsv1.Deployment{}
	strictDecode(t, one(t, objs, "Deployment"), dep)
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	if *dep.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", *dep.Spec.Replicas)
	}
	if c.Image != "registry.example.com/jetsink:1.2.3" || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %q pull %q", c.Image, c.ImagePullPolicy)
	}
	for _, want := range []string{"--namespaces=analytics,staging", "--worker-image=registry.example.com/jetsink:1.2.3-worker",
		"--leader-elect", "--zap-log-level=debug", "--status-refresh=10s", "--metrics-bind-address=:9443",
		"--metrics-cert-path=/etc/jetsink/metrics-certs", "--leader-election-id=jetsink-ops.jetsink.dev",
		"--leader-elect-lease-duration=30s", "--leader-elect-renew-deadline=20s", "--leader-elect-retry-period=4s",
		"--allowed-worker-images=registry.example.com/jetsink/*,registry.example.com/jetsink/*@sha256:*"} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("args %v lack %q", c.Args, want)
		}
	}
	// metrics.tls.secretName is mounted where --metrics-cert-path points.
	var certVolume string
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/etc/jetsink/metrics-certs" && m.ReadOnly {
			certVolume = m.Name
		}
	}
	if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool {
		return v.Name == certVolume && v.Secret != nil && v.Secret.SecretName == "jetsink-metrics-tls"
	}) {
		t.Errorf("the metrics certificate Secret is not mounted at --metrics-cert-path: mounts %v volumes %v", c.VolumeMounts, pod.Volumes)
	}
	if pod.ServiceAccountName != "jetsink-ops" {
		t.Errorf("serviceAccountName %q", pod.ServiceAccountName)
	}
	if c.Resources.Limits.Memory().String() != "512Mi" {
		t.Errorf("memory limit %v", c.Resources.Limits.Memory())
	}
	if pod.NodeSelector["kubernetes.io/os"] != "linux" || len(pod.Tolerations) != 1 || pod.Tolerations[0].Key != "dedicated" ||
		pod.Affinity == nil || pod.Affinity.NodeAffinity == nil {
		t.Errorf("scheduling: nodeSelector %v tolerations %v affinity %v", pod.NodeSelector, pod.Tolerations, pod.Affinity)
	}
	if len(pod.ImagePullSecrets) != 1 || pod.ImagePullSecrets[0].Name != "regcred" {
		t.Errorf("imagePullSecrets %v", pod.ImagePullSecrets)
	}
	assertHardened(t, dep)

	sm := one(t, objs, "ServiceMonitor")
	if sm.GetAPIVersion() != "monitoring.coreos.com/v1" || sm.GetLabels()["release"] != "prom" {
		t.Errorf("ServiceMonitor %s labels %v", sm.GetAPIVersion(), sm.GetLabels())
	}
	svc := &corev1.Service{}
	strictDecode(t, one(t, objs, "Service"), svc)
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	for k, v := range sel {
		if svc.Labels[k] != v {
			t.Errorf("ServiceMonitor selects %v, the metrics Service has labels %v", sel, svc.Labels)
		}
	}
	port, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(port) != 1 || port[0].(map[string]any)["port"] != svc.Spec.Ports[0].Name || svc.Spec.Ports[0].Port != 9443 {
		t.Fatalf("ServiceMonitor endpoints %v, Service ports %v", port, svc.Spec.Ports)
	}
	// With a certificate the ServiceMonitor verifies it, for the Service's
	// DNS name, with the CA of the same Secret.
	ep := port[0].(map[string]any)
	tls, _, _ := unstructured.NestedMap(ep, "tlsConfig")
	if ep["scheme"] != "https" || ep["bearerTokenFile"] != serviceAccountTokenFile ||
		tls["insecureSkipVerify"] != nil || tls["serverName"] != svc.Name+".jetsink-system.svc" ||
		!reflect.DeepEqual(tls["ca"], map[string]any{"secret": map[string]any{"name": "jetsink-metrics-tls", "key": "ca.crt"}}) {
		t.Errorf("ServiceMonitor endpoint %v: want https with the bearer token, verifying jetsink-metrics-tls's CA", ep)
	}
	assertLeastPrivilege(t, objs)
}

// TestTemplateRefusesUnsafeValues: values that would break the operator
// fail at render time, not on the cluster.
func TestTemplateRefusesUnsafeValues(t *testing.T) {
	helm := tool(t, "helm")
	for _, args := range [][]string{
		{"--set", "replicaCount=2", "--set", "leaderElection.enabled=false"},
		{"--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"},
		{"--set", "serviceAccount.create=false"},
		{"--set", "watchNamespace=analytics"},  // misspelt: values.schema.json refuses unknown keys
		{"--set", "watchNamespaces=analytics"}, // a string, not a list
		// A certificate for plain HTTP.
		{"--set", "metrics.secure=false", "--set", "metrics.tls.secretName=jetsink-metrics-tls"},
		// "*" in a list would match only images without a "/".
		{"--set", "workerImagePolicy.allowed={*,registry.example.com/jetsink/*}"},
		{"--set", "workerImagePolicy.allowed={none,registry.example.com/jetsink/*}"},
		{"--set", `workerImagePolicy.allowed={registry.example.com/a\,registry.example.com/b}`}, // one item with a comma
		{"--set", "workerImagePolicy.allowed=null"},                                             // neither any nor none: say which
		{"--set", "leaderElection.id=Jetsink_Manager"},
		{"--set", "leaderElection.leaseDuration=15"},
		{"--set", "monitoring.prometheusRule.uploadErrors.ratio=5"},
		{"--set", "monitoring.podMonitor.namespaceSelector.matchName={a}"},
	} {
		if out, err := tryRun(helm, append([]string{"template", "jetsink", chartDir(t)}, args...)...); err == nil {
			t.Errorf("helm template %v succeeded, want a failure:\n%s", args, out)
		}
	}
	// crds.keep=false drops only the annotation.
	crd := one(t, helmTemplate(t, "--set", "crds.keep=false"), "CustomResourceDefinition")
	if _, ok := crd.GetAnnotations()["helm.sh/resource-policy"]; ok {
		t.Error("crds.keep=false still annotates the CRD with a resource policy")
	}
}

// TestKustomizeMatchesChart: `kubectl kustomize config/default` installs the
// same CRD and the same manager rules as the chart, and a coherent manager.
func TestKustomizeMatchesChart(t *testing.T) {
	objs := parseDocs(t, run(t, tool(t, "kubectl"), "kustomize", filepath.Join(repoRoot(t), "config", "default")))
	chart := helmTemplate(t)

	got, want := &apiextensionsv1.CustomResourceDefinition{}, &apiextensionsv1.CustomResourceDefinition{}
	strictDecode(t, one(t, objs, "CustomResourceDefinition"), got)
	strictDecode(t, one(t, chart, "CustomResourceDefinition"), want)
	if got.Name != want.Name || !reflect.DeepEqual(got.Spec, want.Spec) {
		t.Error("the kustomize CRD differs from the chart's CRD")
	}
	// Both carry controller-gen's annotations; the chart adds only its own.
	for k, v := range got.Annotations {
		if want.Annotations[k] != v {
			t.Errorf("chart CRD lost annotation %s=%s", k, v)
		}
	}

	cr := &rbacv1.ClusterRole{}
	strictDecode(t, named(t, objs, "ClusterRole", "jetsink-manager"), cr)
	if !reflect.DeepEqual(cr.Rules, generatedRules(t)) {
		t.Error("kustomize ClusterRole rules differ from config/rbac/role.yaml")
	}
	// The same metrics roles as the chart's release named jetsink.
	sa := one(t, objs, "ServiceAccount")
	assertMetricsRBAC(t, objs, "jetsink", "jetsink-system", sa.GetName())
	chartLE, kustLE := leaderElectionRole(t, chart), leaderElectionRole(t, objs)
	if !reflect.DeepEqual(chartLE.Rules, kustLE.Rules) {
		t.Errorf("leader-election rules differ: chart %v, kustomize %v", chartLE.Rules, kustLE.Rules)
	}

	dep := &appsv1.Deployment{}
	strictDecode(t, one(t, objs, "Deployment"), dep)
	c := dep.Spec.Template.Spec.Containers[0]
	var workerImage string
	for _, e := range c.Env {
		if e.Name == "JETSINK_WORKER_IMAGE" {
			workerImage = e.Value
		}
	}
	if c.Image != "ghcr.io/jetsink/jetsink:"+chartAppVersion(t) || workerImage != c.Image {
		t.Errorf("manager image %q, worker image %q: want both the released image", c.Image, workerImage)
	}
	// Secure metrics on the chart's port, and the chart's Lease for a
	// release named jetsink: switching between the two install paths
	// keeps one leader.
	chartDep := &appsv1.Deployment{}
	strictDecode(t, one(t, chart, "Deployment"), chartDep)
	for _, flag := range []string{"--metrics-bind-address", "--leader-election-id"} {
		if got, want := argValue(c.Args, flag), argValue(chartDep.Spec.Template.Spec.Containers[0].Args, flag); got != want {
			t.Errorf("kustomize %s=%q, the chart's %q", flag, got, want)
		}
	}
	if slices.Contains(c.Args, "--metrics-secure=false") {
		t.Errorf("kustomize args %v turn secure metrics off", c.Args)
	}
	svc := &corev1.Service{}
	strictDecode(t, one(t, objs, "Service"), svc)
	if p := svc.Spec.Ports[0]; p.Port != 8443 || p.TargetPort.StrVal != "metrics" || containerPort(t, c, "metrics") != 8443 ||
		ptr.Deref(p.AppProtocol, "") != "https" {
		t.Errorf("kustomize metrics Service port %+v, container ports %v: want https on 8443", p, c.Ports)
	}
	// config/prometheus scrapes as the chart's ServiceMonitor does.
	mon := one(t, parseDocs(t, run(t, tool(t, "kubectl"), "kustomize", filepath.Join(repoRoot(t), "config", "prometheus"))), "ServiceMonitor")
	chartMon := one(t, helmTemplate(t, "--set", "metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
	monEP, _, _ := unstructured.NestedSlice(mon.Object, "spec", "endpoints")
	chartEP, _, _ := unstructured.NestedSlice(chartMon.Object, "spec", "endpoints")
	if !reflect.DeepEqual(monEP, chartEP) {
		t.Errorf("config/prometheus endpoints %v, the chart's %v", monEP, chartEP)
	}
	if sel, _, _ := unstructured.NestedStringMap(mon.Object, "spec", "selector", "matchLabels"); !labelsMatch(sel, svc.Labels) {
		t.Errorf("config/prometheus selects %v, the metrics Service has labels %v", sel, svc.Labels)
	}
	assertHardened(t, dep)
	if dep.Spec.Template.Spec.ServiceAccountName != sa.GetName() {
		t.Errorf("manager runs as %q, the ServiceAccount is %q", dep.Spec.Template.Spec.ServiceAccountName, sa.GetName())
	}
	for _, o := range objs {
		switch o.GetKind() {
		case "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding":
		default:
			if o.GetNamespace() != "jetsink-system" {
				t.Errorf("%s %s in namespace %q", o.GetKind(), o.GetName(), o.GetNamespace())
			}
		}
	}
	assertLeastPrivilege(t, objs)
}

// TestDockerImageHasTheBinariesSources: the image builds from the
// directories it copies, so each package the two binaries import must be
// under one of them (the image cannot be built here, without Docker).
func TestDockerImageHasTheBinariesSources(t *testing.T) {
	root := repoRoot(t)
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	out := run(t, "go", "-C", root, "list", "-deps", "-f", "{{.ImportPath}}", "./cmd/manager", "./cmd/sinkworker")
	for _, pkg := range strings.Fields(out) {
		rel, ok := strings.CutPrefix(pkg, module+"/")
		if !ok {
			continue
		}
		top := strings.SplitN(rel, "/", 2)[0] + "/"
		if !strings.Contains(string(dockerfile), "COPY "+top+" "+top) {
			t.Errorf("the binaries import %s but the Dockerfile does not COPY %s", pkg, top)
		}
		if !strings.Contains(string(ignore), "!"+top) {
			t.Errorf("the binaries import %s but .dockerignore excludes %s", pkg, top)
		}
	}
	for _, want := range []string{"-o /out/manager ./cmd/manager", "-o /out/sinkworker ./cmd/sinkworker", "CGO_ENABLED=0",
		"/usr/local/bin/", ":nonroot", "USER 65532"} {
		if !strings.Contains(string(dockerfile), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

// assertHardened: the manager runs as non-root on a read-only root
// filesystem without privilege escalation or capabilities.
func assertHardened(t *testing.T, dep *appsv1.Deployment) {
	t.Helper()
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Errorf("%s: pod securityContext %+v does not require non-root", dep.Name, pod.SecurityContext)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: container securityContext %+v is not hardened", dep.Name, sc)
	}
}

// allowedVerbs are the only verbs the manager's roles may grant: no
// delete (but of PodDisruptionBudgets), no escalate/bind/impersonate, no
// wildcards.
var allowedVerbs = []string{"get", "list", "watch", "create", "update", "patch"}

// assertLeastPrivilege checks every rendered (Cluster)Role: no wildcards,
// nothing beyond allowedVerbs, Secrets read-only, and rules only for the
// resources the controller touches (plus leases for leader election).
func assertLeastPrivilege(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	allowedResources := map[string]bool{}
	for _, r := range generatedRules(t) {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				allowedResources[g+"/"+res] = true
			}
		}
	}
	allowedResources["coordination.k8s.io/leases"] = true
	allowedResources["/events"] = true
	// Secure metrics: create-only, checked by assertMetricsRBAC.
	allowedResources["authentication.k8s.io/tokenreviews"] = true
	allowedResources["authorization.k8s.io/subjectaccessreviews"] = true
	for _, u := range objs {
		var rules []rbacv1.PolicyRule
		switch u.GetKind() {
		case "ClusterRole":
			r := &rbacv1.ClusterRole{}
			strictDecode(t, u, r)
			if r.AggregationRule != nil {
				t.Errorf("ClusterRole %s aggregates other roles", r.Name)
			}
			rules = r.Rules
		case "Role":
			r := &rbacv1.Role{}
			strictDecode(t, u, r)
			rules = r.Rules
		case "ClusterRoleBinding", "RoleBinding":
			if ref, _, _ := unstructured.NestedString(u.Object, "roleRef", "name"); ref == "cluster-admin" || ref == "admin" || ref == "edit" {
				t.Errorf("%s %s binds the built-in %s role", u.GetKind(), u.GetName(), ref)
			}
			continue
		default:
			continue
		}
		for _, r := range rules {
			// Only the scrapers' reader role names a URL, and only GET /metrics.
			if len(r.NonResourceURLs) > 0 && (!strings.HasSuffix(u.GetName(), "-metrics-reader") ||
				!reflect.DeepEqual(r, metricsReaderRules[0])) {
				t.Errorf("%s %s grants non-resource URLs %v %v", u.GetKind(), u.GetName(), r.NonResourceURLs, r.Verbs)
			}
			if slices.ContainsFunc(r.Resources, func(res string) bool { return res == "tokenreviews" || res == "subjectaccessreviews" }) &&
				!slices.Equal(r.Verbs, []string{"create"}) {
				t.Errorf("%s %s grants %v on %v, want create only", u.GetKind(), u.GetName(), r.Verbs, r.Resources)
			}
			for _, v := range r.Verbs {
				// The one deletion: the workers' PodDisruptionBudget, when
				// the sink stops asking for one.
				pdbOnly := slices.Equal(r.APIGroups, []string{"policy"}) && slices.Equal(r.Resources, []string{"poddisruptionbudgets"})
				if !slices.Contains(allowedVerbs, v) && !(v == "delete" && pdbOnly) {
					t.Errorf("%s %s grants verb %q", u.GetKind(), u.GetName(), v)
				}
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					if g == "*" || res == "*" || !allowedResources[g+"/"+res] {
						t.Errorf("%s %s grants %q in group %q, which the controller does not use", u.GetKind(), u.GetName(), res, g)
					}
					if res == "secrets" && slices.ContainsFunc(r.Verbs, func(v string) bool { return v != "get" && v != "list" && v != "watch" }) {
						t.Errorf("%s %s may write Secrets: %v", u.GetKind(), u.GetName(), r.Verbs)
					}
				}
			}
		}
	}
}

func leaderElectionRole(t *testing.T, objs []*unstructured.Unstructured) *rbacv1.Role {
	t.Helper()
	for _, u := range find(objs, "Role") {
		if strings.HasSuffix(u.GetName(), "leader-election") {
			r := &rbacv1.Role{}
			strictDecode(t, u, r)
			return r
		}
	}
	t.Fatal("no leader-election Role")
	return nil
}

// generatedRules are the rules controller-gen wrote from the markers.
func generatedRules(t testing.TB) []rbacv1.PolicyRule {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cr rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(b, &cr); err != nil {
		t.Fatal(err)
	}
	return cr.Rules
}

func chartAppVersion(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(t), "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil || c.AppVersion == "" {
		t.Fatalf("Chart.yaml appVersion: %v", err)
	}
	return c.AppVersion
}

// named returns the object of a kind with a name, failing otherwise.
func named(t testing.TB, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range find(objs, kind) {
		if o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

// argValue is the value of --flag=value in args, "" when absent.
func argValue(args []string, flag string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

func containerPort(t testing.TB, c corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port %q", c.Name, name)
	return 0
}

// labelsMatch: every label of sel is in labels.
func labelsMatch(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

// serviceAccountTokenFile is where a pod's ServiceAccount token is mounted:
// Prometheus scrapes the manager with its own.
const serviceAccountTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
