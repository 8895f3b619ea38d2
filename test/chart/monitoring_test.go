package chart

import (
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
	"github.com/jetsink/jetsink/sinkworker"
)

// The monitoring.coreos.com types are not a dependency of this module: the
// PodMonitor and PrometheusRule are checked as unstructured objects, field
// by field, for what Prometheus relies on.

// TestTemplateMonitoringOffByDefault: without the Prometheus Operator's CRDs
// a PodMonitor or PrometheusRule would fail the install.
func TestTemplateMonitoringOffByDefault(t *testing.T) {
	for _, kind := range []string{"PodMonitor", "PrometheusRule", "ServiceMonitor"} {
		if n := len(find(helmTemplate(t), kind)); n != 0 {
			t.Errorf("default values render %d %s", n, kind)
		}
	}
}

// TestTemplatePodMonitor: the PodMonitor selects the pods and port the
// workload package gives every sink's workers, in the namespaces asked
// for, and labels each series with the sink's name.
func TestTemplatePodMonitor(t *testing.T) {
	sink := &jetsinkv1.WarehouseSink{ObjectMeta: metav1.ObjectMeta{Name: "events", Namespace: "analytics"}}
	sink.Spec.Source.URL, sink.Spec.Source.Stream, sink.Spec.Destination.Bucket = "nats://nats:4222", "EVENTS", "lake"
	pod := workload.Deployment(sink, "ghcr.io/jetsink/jetsink:test", workload.Credentials{}).Spec.Template

	for _, tc := range []struct {
		name string
		args []string
		want map[string]any // spec.namespaceSelector
	}{
		{"every namespace", nil, map[string]any{"any": true}},
		{"watched namespaces", []string{"--set", "watchNamespaces={analytics,staging}"},
			map[string]any{"matchNames": []any{"analytics", "staging"}}},
		{"explicit selector", []string{"--set", "watchNamespaces={analytics}", "--set", "monitoring.podMonitor.namespaceSelector.matchNames={team-a}"},
			map[string]any{"matchNames": []any{"team-a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := helmTemplate(t, append([]string{"--set", "monitoring.podMonitor.enabled=true",
				"--set", "monitoring.podMonitor.labels.release=prom", "--set", "monitoring.podMonitor.interval=15s"}, tc.args...)...)
			pm := one(t, objs, "PodMonitor")
			if pm.GetAPIVersion() != "monitoring.coreos.com/v1" || pm.GetNamespace() != "jetsink-system" || pm.GetLabels()["release"] != "prom" {
				t.Errorf("PodMonitor %s %s/%s labels %v", pm.GetAPIVersion(), pm.GetNamespace(), pm.GetName(), pm.GetLabels())
			}
			assertFields(t, pm, "spec", "selector", "podMetricsEndpoints", "namespaceSelector")
			if got, _, _ := unstructured.NestedMap(pm.Object, "spec", "namespaceSelector"); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("namespaceSelector %v, want %v", got, tc.want)
			}
			sel, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
			if !labelsMatch(sel, pod.Labels) || sel[workload.LabelName] != workload.WorkerName {
				t.Errorf("PodMonitor selects %v, the workers' pods are labelled %v", sel, pod.Labels)
			}
			eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
			if len(eps) != 1 {
				t.Fatalf("podMetricsEndpoints %v", eps)
			}
			ep := eps[0].(map[string]any)
			for k := range ep {
				if !slices.Contains([]string{"port", "path", "scheme", "interval", "scrapeTimeout", "relabelings"}, k) {
					t.Errorf("podMetricsEndpoints[0] has field %q this test does not check", k)
				}
			}
			if ep["port"] != pod.Spec.Containers[0].Ports[0].Name || ep["path"] != "/metrics" || ep["scheme"] != "http" || ep["interval"] != "15s" {
				t.Errorf("endpoint %v, the workers serve plain /metrics on port %+v", ep, pod.Spec.Containers[0].Ports)
			}
			// The sink's name, from the pods' instance label, is the
			// "name" the alerts group by.
			relabel := []any{map[string]any{
				"sourceLabels": []any{"__meta_kubernetes_pod_label_" + promLabel(workload.LabelInstance)},
				"targetLabel":  "name", "action": "replace",
			}}
			if !reflect.DeepEqual(ep["relabelings"], relabel) || pod.Labels[workload.LabelInstance] != sink.Name {
				t.Errorf("relabelings %v, want %v (pods labelled %v)", ep["relabelings"], relabel, pod.Labels)
			}
		})
	}
}

// managerSinkGauges are the manager's per-sink series the alerts read,
// labelled with the sink's namespace and name.
var managerSinkGauges = []string{"jetsink_sink_consumer_lag", "jetsink_sink_consumer_pending"}

// TestTemplatePrometheusRule: every alert names series the worker (or the
// manager) exports, with labels they carry, groups by sink, and takes its
// thresholds from the values.
func TestTemplatePrometheusRule(t *testing.T) {
	objs := helmTemplate(t, "--set", "monitoring.prometheusRule.enabled=true", "--set", "monitoring.prometheusRule.labels.release=prom",
		"--set", "monitoring.prometheusRule.noUpload.minutes=42", "--set", "monitoring.prometheusRule.uploadErrors.ratio=0.25",
		"--set", "monitoring.prometheusRule.uploadErrors.window=7m", "--set", "monitoring.prometheusRule.consumerLag.minimum=5000",
		"--set", "monitoring.prometheusRule.deadLetters.threshold=3", "--set", "monitoring.prometheusRule.noUpload.severity=page")
	pr := one(t, objs, "PrometheusRule")
	if pr.GetAPIVersion() != "monitoring.coreos.com/v1" || pr.GetNamespace() != "jetsink-system" || pr.GetLabels()["release"] != "prom" {
		t.Errorf("PrometheusRule %s %s/%s labels %v", pr.GetAPIVersion(), pr.GetNamespace(), pr.GetName(), pr.GetLabels())
	}
	assertFields(t, pr, "spec", "groups")
	groups, _, _ := unstructured.NestedSlice(pr.Object, "spec", "groups")
	if len(groups) != 1 {
		t.Fatalf("groups %v", groups)
	}
	rules := map[string]map[string]any{}
	for _, r := range groups[0].(map[string]any)["rules"].([]any) {
		rule := r.(map[string]any)
		for k := range rule {
			if !slices.Contains([]string{"alert", "expr", "for", "labels", "annotations"}, k) {
				t.Errorf("rule %v has field %q (a recording rule or a misspelling)", rule["alert"], k)
			}
		}
		rules[rule["alert"].(string)] = rule
	}
	want := []string{"JetsinkConsumerLagGrowing", "JetsinkDeadLetterFailing", "JetsinkEventsDeadLettered", "JetsinkS3UploadErrors", "JetsinkSinkNotUploading"}
	if got := slices.Sorted(maps.Keys(rules)); !slices.Equal(got, want) {
		t.Fatalf("alerts %v, want %v", got, want)
	}

	families := workerMetricFamilies(t)
	for name, rule := range rules {
		expr, _ := rule["expr"].(string)
		if !strings.Contains(expr, "by (namespace, name)") {
			t.Errorf("%s does not group by sink: %s", name, expr)
		}
		for _, m := range seriesRe.FindAllStringSubmatch(expr, -1) {
			metric, selector := m[1], m[3]
			if slices.Contains(managerSinkGauges, metric) {
				continue
			}
			labels, ok := families[metric]
			if !ok {
				t.Errorf("%s reads %s, which the worker does not export", name, metric)
				continue
			}
			for _, l := range labelRe.FindAllStringSubmatch(selector, -1) {
				if !labels[l[1]] {
					t.Errorf("%s selects %s{%s}: the worker's %s has labels %v", name, metric, l[1], metric, slices.Collect(maps.Keys(labels)))
				}
			}
		}
		labels, _ := rule["labels"].(map[string]any)
		if labels["severity"] == nil || labels["severity"] == "" {
			t.Errorf("%s has no severity", name)
		}
		ann, _ := rule["annotations"].(map[string]any)
		if s, _ := ann["summary"].(string); !strings.Contains(s, "{{ $labels.namespace }}/{{ $labels.name }}") {
			t.Errorf("%s summary %q does not name the sink for Alertmanager", name, s)
		}
	}
	for alert, want := range map[string]string{
		"JetsinkSinkNotUploading":   "> 42 * 60",
		"JetsinkS3UploadErrors":     "> 0.25",
		"JetsinkConsumerLagGrowing": "> 5000",
		"JetsinkEventsDeadLettered": "[15m])) > 3",
	} {
		if expr := rules[alert]["expr"].(string); !strings.Contains(expr, want) {
			t.Errorf("%s expr lacks the value's %q:\n%s", alert, want, expr)
		}
	}
	if expr := rules["JetsinkS3UploadErrors"]["expr"].(string); strings.Count(expr, "[7m]") != 2 {
		t.Errorf("JetsinkS3UploadErrors does not use uploadErrors.window for both rates:\n%s", expr)
	}
	if sev := rules["JetsinkSinkNotUploading"]["labels"].(map[string]any)["severity"]; sev != "page" {
		t.Errorf("JetsinkSinkNotUploading severity %v, want the value's page", sev)
	}

	// Each alert can be turned off on its own.
	objs = helmTemplate(t, "--set", "monitoring.prometheusRule.enabled=true", "--set", "monitoring.prometheusRule.consumerLag.enabled=false",
		"--set", "monitoring.prometheusRule.deadLetters.enabled=false")
	groups, _, _ = unstructured.NestedSlice(one(t, objs, "PrometheusRule").Object, "spec", "groups")
	var left []string
	for _, r := range groups[0].(map[string]any)["rules"].([]any) {
		left = append(left, r.(map[string]any)["alert"].(string))
	}
	if want := []string{"JetsinkSinkNotUploading", "JetsinkS3UploadErrors"}; !slices.Equal(left, want) {
		t.Errorf("with consumerLag and deadLetters off: alerts %v, want %v", left, want)
	}
}

var (
	// seriesRe finds the series an expression reads, with its selector.
	seriesRe = regexp.MustCompile(`\b(jetsink_[a-z_]+|process_start_time_seconds)\b(\{([^}]*)\})?`)
	labelRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
)

// workerMetricFamilies are the series a worker registers, with their label
// names, as a real Worker's registry gathers them (plus the process
// collector, which the worker registers on the registry it serves).
func workerMetricFamilies(t *testing.T) map[string]map[string]bool {
	t.Helper()
	sink := &jetsinkv1.WarehouseSink{ObjectMeta: metav1.ObjectMeta{Name: "events", Namespace: "demo"}}
	sink.Spec.Source.URL, sink.Spec.Source.Stream, sink.Spec.Destination.Bucket = "nats://127.0.0.1:1", "EVENTS", "lake"
	cfg := workload.WorkerConfig(sink)
	cfg.MetricsAddr = "127.0.0.1:0"
	reg := prometheus.NewRegistry()
	if _, err := sinkworker.New(cfg, sinkworker.Options{Registry: reg}); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	families := map[string]map[string]bool{"process_start_time_seconds": {}}
	for _, mf := range mfs {
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		families[mf.GetName()] = labels
	}
	return families
}

// assertFields: the object's spec has exactly the fields the test checks.
func assertFields(t *testing.T, u *unstructured.Unstructured, path string, fields ...string) {
	t.Helper()
	m, _, _ := unstructured.NestedMap(u.Object, path)
	if got := slices.Sorted(maps.Keys(m)); !slices.Equal(got, slices.Sorted(slices.Values(fields))) {
		t.Errorf("%s %s has %s fields %v, want %v", u.GetKind(), u.GetName(), path, got, fields)
	}
}

// promLabel is a Kubernetes label as Prometheus' service discovery names it.
func promLabel(k string) string {
	return strings.NewReplacer(".", "_", "/", "_", "-", "_").Replace(k)
}
