package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/jetsink/jetsink/hack/cluster"
	"github.com/jetsink/jetsink/internal/reporoot"
)

// The localstack command prints how to reach its stack, the kubeconfig it
// writes works with kubectl, the demo's sinks (plain files and an Iceberg
// table) apply as printed and become Ready, and Ctrl-C stops everything:
// afterwards nothing listens on the API server's, NATS's, S3's or
// PostgreSQL's port any more, and the cluster left no process,
// mount, cgroup, bridge, iptables chain or directory behind.
func TestLocalstackCommandStopsEverything(t *testing.T) {
	root, err := reporoot.Find()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "localstack")
	build := exec.Command("go", "build", "-o", bin, "./hack/localstack")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build localstack: %v\n%s", err, out)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, "-dir", dir, "-manager", filepath.Join(binDir, "manager"),
		"-worker", filepath.Join(binDir, "sinkworker"), "-table-worker", filepath.Join(binDir, "sinkworker-iceberg"))
	cmd.Dir = root
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState != nil {
			return
		}
		// SIGINT lets localstack stop what it started: a SIGKILL on a
		// failed test left its etcd and kube-apiserver running for ever.
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
		}
	})

	var out strings.Builder
	deadline := time.After(3 * time.Minute)
	for !strings.Contains(out.String(), "Press Ctrl-C") {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("localstack exited early:\n%s", out.String())
			}
			out.WriteString(l + "\n")
		case <-deadline:
			t.Fatalf("localstack not up after 3m:\n%s", out.String())
		}
	}
	text := out.String()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	for _, want := range []string{"export KUBECONFIG=" + kubeconfig, "kubectl get sinks -A", "Logs: "} {
		if !strings.Contains(text, want) {
			t.Errorf("localstack's instructions lack %q:\n%s", want, text)
		}
	}
	kc := exec.Command(filepath.Join(root, "bin", "kubectl"), "get", "sinks", "-A")
	kc.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	if b, err := kc.CombinedOutput(); err != nil {
		t.Errorf("kubectl with the printed kubeconfig: %v\n%s", err, b)
	}

	// Everything that listens: the API server (from the kubeconfig), NATS
	// and S3 (from the instructions).
	addrs := map[string]string{}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	addrs["kube-apiserver"] = strings.TrimPrefix(cfg.Host, "https://")
	for name, re := range map[string]string{"nats": `NATS JetStream:\s+nats://(\S+)`, "s3": `S3 \(versitygw\):\s+http://(\S+)`,
		"postgresql": `PostgreSQL:\s+postgres://[^@/\s]+@([^/\s]+)/`} {
		m := regexp.MustCompile(re).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("no %s address in:\n%s", name, text)
		}
		addrs[name] = m[1]
	}
	for name, a := range addrs {
		if !listening(a) {
			t.Errorf("%s is not listening on %s while the stack runs", name, a)
		}
	}

	// The demo's sink applies as printed and becomes Ready.
	sinkYAML, err := os.ReadFile(filepath.Join(root, "hack", "demo", "sink.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	catalogURI := regexp.MustCompile(`PostgreSQL:\s+(\S+)`).FindStringSubmatch(text)[1]
	manifest := strings.NewReplacer("${NATS_URL}", "nats://"+addrs["nats"], "${S3_ENDPOINT}", "http://"+addrs["s3"],
		"${CATALOG_URI}", catalogURI).Replace(string(sinkYAML))
	apply := exec.Command(filepath.Join(root, "bin", "kubectl"), "apply", "-f", "-")
	apply.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	apply.Stdin = strings.NewReader(manifest)
	if b, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply the demo's sink: %v\n%s", err, b)
	}
	// As a user (or a GitOps tool) waits for it.
	wait := exec.Command(filepath.Join(root, "bin", "kubectl"), "wait", "--for=condition=Ready", "sink/events",
		"sink/events-table", "-n", "analytics", "--timeout=60s")
	wait.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	if b, err := wait.CombinedOutput(); err != nil {
		get := exec.Command(filepath.Join(root, "bin", "kubectl"), "get", "sinks", "-n", "analytics")
		get.Env = wait.Env
		state, _ := get.CombinedOutput()
		t.Fatalf("kubectl wait --for=condition=Ready sink/events sink/events-table: %v\n%s\n%s", err, b, state)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines { //nolint:revive // drain
		}
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("localstack exited with %v after Ctrl-C", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("localstack still running 2m after Ctrl-C")
	}
	for name, a := range addrs {
		if listening(a) {
			t.Errorf("%s still listens on %s after localstack stopped", name, a)
		}
	}
	if left := cluster.Leftovers(); len(left) > 0 {
		t.Errorf("localstack left behind after Ctrl-C: %v", left)
	}
}

// listening tells whether a socket of this machine listens on addr's port.
// It reads /proc/net/tcp{,6} rather than dialling: this machine's network
// accepts connections to any address it does not have, so a dial to the
// stack's host address succeeds even once that address is gone.
func listening(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return false
	}
	want := fmt.Sprintf(":%04X", p)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			// local_address is fields[1], st fields[3]; 0A is LISTEN.
			if len(fields) > 3 && strings.HasSuffix(fields[1], want) && fields[3] == "0A" {
				return true
			}
		}
	}
	return false
}
