package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetsink/jetsink/internal/testutil/s3test"
)

// TestSmoke runs the whole benchmark small, so `make bench` cannot rot:
// 20,000 events through every kind of run (the declared schema's and the
// Iceberg table's too), 20 sinks through the controller,
// every event found in the bucket, and a summary line that parses.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts NATS, versitygw, envtest and the binaries")
	}
	root, err := s3test.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin")
	tmp := t.TempDir()
	for _, b := range []struct{ out, cmd, tags string }{
		{"sinkworker", "sinkworker", ""}, {"sinkworker-iceberg", "sinkworker", "iceberg"}, {"manager", "manager", ""},
	} {
		out, err := exec.Command("go", "build", "-tags", b.tags, "-o", filepath.Join(tmp, b.out), filepath.Join(root, "cmd", b.cmd)).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", b.out, err, out)
		}
	}
	natsCLI := filepath.Join(bin, "nats")
	if _, err := os.Stat(natsCLI); err != nil {
		// make test does not build natscli (make bench does): the nats.go
		// loop stands in as the ceiling.
		t.Logf("no %s: the nats.go consume loop is the ceiling", natsCLI)
		natsCLI = ""
	}
	o := options{
		// The scaling runs are the default run's code with other counts;
		// they are left out to keep this under a minute.
		// 20,000 events of a million-a-day stream: about 30 minutes of
		// timestamps, so files hold hundreds of rows as in the real run.
		perDay: 1_000_000,
		root:   root, events: 20000, memEvents: 20000, seed: 7, sinks: 20, quiet: 2 * time.Second,
		maxAge: time.Second, scaling: false, profile: true,
		natsCLI: natsCLI, sinkworker: filepath.Join(tmp, "sinkworker"), manager: filepath.Join(tmp, "manager"),
		versitygw: s3test.Binary(t), assets: bin, dir: filepath.Join(tmp, "work"),
	}
	if v := os.Getenv("KUBEBUILDER_ASSETS"); v != "" {
		o.assets = v
	}
	rep, err := run(t.Context(), o, nil)
	var out bytes.Buffer
	if rep != nil {
		rep.print(&out)
	}
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]verification{"default": rep.mainCheck, "declared": rep.checks["declared"],
		"iceberg": rep.checks["iceberg"], "memory": rep.checks["memory"]} {
		if !strings.Contains(v.String(), "0 missing") || v.footerRows == 0 {
			t.Errorf("run %s: %s", name, v)
		}
	}
	if rep.prof == nil || len(rep.prof.top) == 0 || rep.ctrl == nil || rep.ctrl.sinks != 20 {
		t.Error("missing the profile's entries or the controller's results")
	}

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	m := regexp.MustCompile(`^bench: sink=(\d+) ceiling=(\d+) ratio=(\d+\.\d\d) rss_mib=(\d+) cap_mib=(\d+) sinks_converge_s=(\d+\.\d) quiet_writes_per_min=(\d+\.\d)$`).FindStringSubmatch(last)
	if m == nil {
		t.Fatalf("last line does not parse: %q", last)
	}
	for i, name := range []string{"sink", "ceiling", "ratio", "rss_mib", "cap_mib", "sinks_converge_s"} {
		if v, _ := strconv.ParseFloat(m[i+1], 64); v <= 0 {
			t.Errorf("%s=%s, want a positive number", name, m[i+1])
		}
	}
	if m[5] != "256" {
		t.Errorf("cap_mib=%s, want the default MAX_BUFFERED_BYTES of 256 MiB", m[5])
	}
}
