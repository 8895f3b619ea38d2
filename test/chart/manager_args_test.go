package chart

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// managerArgs renders the chart for a release and returns the manager's
// command-line arguments.
func managerArgs(t testing.TB, release string, args ...string) []string {
	t.Helper()
	out := run(t, tool(t, "helm"), append([]string{"template", release, chartDir(t), "--namespace", "jetsink-system"}, args...)...)
	dep := &appsv1.Deployment{}
	strictDecode(t, one(t, parseDocs(t, out), "Deployment"), dep)
	return dep.Spec.Template.Spec.Containers[0].Args
}

// TestTemplateLeaderElectionPerRelease: two releases in one namespace hold
// two Leases, so each elects its own leader; the release named jetsink
// keeps the Lease every release of chart 0.1.0 used, so upgrading it never
// runs two leaders at once.
func TestTemplateLeaderElectionPerRelease(t *testing.T) {
	ids := map[string]string{}
	for _, release := range []string{"jetsink", "jetsink-team-a", "analytics"} {
		ids[release] = argValue(managerArgs(t, release), "--leader-election-id")
	}
	want := map[string]string{
		"jetsink":        "jetsink-manager.jetsink.dev",
		"jetsink-team-a": "jetsink-team-a-manager.jetsink.dev",
		"analytics":      "analytics-jetsink-manager.jetsink.dev",
	}
	for release, id := range want {
		if ids[release] != id {
			t.Errorf("release %s: --leader-election-id=%q, want %q", release, ids[release], id)
		}
	}
	if got := argValue(managerArgs(t, "analytics", "--set", "leaderElection.id=shared.example.com"), "--leader-election-id"); got != "shared.example.com" {
		t.Errorf("leaderElection.id: --leader-election-id=%q", got)
	}
	// Without leader election, none of its flags.
	for _, a := range managerArgs(t, "jetsink", "--set", "leaderElection.enabled=false") {
		if strings.HasPrefix(a, "--leader-elect") {
			t.Errorf("leaderElection.enabled=false still passes %s", a)
		}
	}
}

// TestTemplateWorkerImagePolicy: workerImagePolicy.allowed reaches the
// manager in the flag's own vocabulary (docs: values.yaml).
func TestTemplateWorkerImagePolicy(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "*"},
		{[]string{"--set-json", "workerImagePolicy.allowed=[]"}, "none"},
		{[]string{"--set", "workerImagePolicy.allowed={registry.example.com/jetsink/*,ghcr.io/acme/sinkworker:*}"},
			"registry.example.com/jetsink/*,ghcr.io/acme/sinkworker:*"},
	} {
		if got := argValue(managerArgs(t, "jetsink", tc.args...), "--allowed-worker-images"); got != tc.want {
			t.Errorf("%v: --allowed-worker-images=%q, want %q", tc.args, got, tc.want)
		}
	}
}

// TestManagerAcceptsChartArgs runs the real manager binary with the
// arguments the chart renders and -help after them: the flag package parses
// every argument before it, so the run exits 0 only when each flag exists
// and each value parses (durations, the image policy, booleans), and 2
// otherwise, without connecting anywhere.
func TestManagerAcceptsChartArgs(t *testing.T) {
	managerBin := filepath.Join(t.TempDir(), "manager")
	run(t, "go", "build", "-C", repoRoot(t), "-o", managerBin, "./cmd/manager")
	for _, tc := range [][]string{
		nil,
		{"--values", namespacedValues},
		{"--set-json", "workerImagePolicy.allowed=[]", "--set", "metrics.secure=false", "--set", "leaderElection.enabled=false"},
	} {
		args := managerArgs(t, "jetsink", tc...)
		out, err := exec.Command(managerBin, append(slices.Clone(args), "-help")...).CombinedOutput()
		if err != nil {
			t.Errorf("values %v: manager %s: %v\n%s", tc, strings.Join(args, " "), err, lastLines(string(out), 3))
		}
	}
	// And the check bites: a value the manager refuses fails the run.
	if out, err := exec.Command(managerBin, "--allowed-worker-images=registry.example.com/[", "-help").CombinedOutput(); err == nil {
		t.Errorf("manager accepted a malformed image pattern:\n%s", lastLines(string(out), 3))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
