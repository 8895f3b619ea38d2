// Package e2e proves the whole path on the local stack (hack/localstack):
// a real single-node Kubernetes (control plane, containerd, kubelet), the
// operator installed with `helm install` and running as a pod, the sink
// workers as real containers of the product's image, real NATS JetStream and
// a real S3 (versitygw). Events go in with a JetStream client and are
// checked coming out as Parquet rows, one by one.
//
// One stack serves the whole suite (starting it costs seconds); every test
// has its own namespace, stream and bucket. The binaries under test
// (manager, sinkworker) are built fresh into a temp dir and go into the
// image; the tool binaries come from `make tools` (which `make test` and
// `make e2e` run first). On a machine that cannot run the cluster (no root,
// no containerd) the suite is skipped with the reason, unless
// JETSINK_REQUIRE_CLUSTER=1 (as in CI) makes that a failure.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/controllers/workload"
	"github.com/jetsink/jetsink/hack/cluster"
	"github.com/jetsink/jetsink/hack/localstack/stack"
	"github.com/jetsink/jetsink/internal/reporoot"
	"github.com/jetsink/jetsink/sinkworker"
)

// st is the suite's stack (started by the first newEnv, in stDir); binDir
// holds the manager and sinkworker binaries built for it.
var (
	st     *stack.Stack
	stDir  string
	stOnce sync.Once
	stErr  error
	binDir string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	root, err := reporoot.Find()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if err := stack.Available(); err != nil {
		if os.Getenv("JETSINK_REQUIRE_CLUSTER") != "" {
			fmt.Fprintln(os.Stderr, "e2e: the local cluster cannot run here:", err)
			return 1
		}
		fmt.Fprintln(os.Stderr, "e2e: SKIP: the local cluster cannot run here:", err)
		return 0
	}
	for _, tool := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
		"kube-proxy", "etcd", "versitygw", "kubectl", "helm"} {
		if _, err := os.Stat(filepath.Join(root, "bin", tool)); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: bin/%s is missing: run `make tools` (make test and make e2e do)\n", tool)
			return 1
		}
	}
	binDir, err = os.MkdirTemp("", "jetsink-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	for _, b := range []struct{ out, pkg, tags string }{
		{"manager", "./cmd/manager", ""},
		{"sinkworker", "./cmd/sinkworker", ""},
		{"sinkworker-iceberg", "./cmd/sinkworker", "iceberg"},
	} {
		cmd := b.out
		build := exec.Command("go", "build", "-tags", b.tags, "-o", filepath.Join(binDir, b.out), b.pkg)
		build.Dir = root
		// Static: the image has no libc.
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: build %s: %v\n%s", cmd, err, out)
			return 1
		}
	}
	code := m.Run()
	if st != nil {
		if err := st.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: stop:", err)
			code = 1
		}
		if left := cluster.Leftovers(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "e2e: the stack left behind: %v\n", left)
			code = 1
		}
		if code == 0 {
			os.RemoveAll(stDir)
		} else {
			fmt.Fprintf(os.Stderr, "e2e: the stack's files and logs are kept in %s\n", stDir)
		}
	}
	return code
}

// sharedStack starts the suite's stack on first use. Only one cluster runs
// per machine, so TestLocalstackCommandStopsEverything (which starts its
// own, and runs first: its file sorts first) must run before it.
func sharedStack(t *testing.T) *stack.Stack {
	t.Helper()
	stOnce.Do(func() {
		var err error
		if stDir, err = os.MkdirTemp("", "jetsink-e2e-"); err != nil {
			stErr = err
			return
		}
		var progress io.Writer = io.Discard
		if testing.Verbose() {
			progress = os.Stderr
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		st, stErr = stack.Start(ctx, stack.Options{
			Dir:               stDir,
			ManagerBinary:     filepath.Join(binDir, "manager"),
			WorkerBinary:      filepath.Join(binDir, "sinkworker"),
			TableWorkerBinary: filepath.Join(binDir, "sinkworker-iceberg"),
			StatusRefresh:     time.Second,
			Progress:          progress,
		})
	})
	if stErr != nil {
		t.Fatalf("start the stack: %v", stErr)
	}
	return st
}

// env is one test's slice of the stack: a namespace with the S3 Secret, a
// stream with its dead-letter stream, and a bucket.
type env struct {
	t      *testing.T
	ns     string
	stream string // also the subject prefix, lower-cased
	bucket string
	js     jetstream.JetStream
	rows   map[string][]sinkworker.Row // object key → rows, cached
}

func newEnv(t *testing.T, name string) *env {
	t.Helper()
	sharedStack(t)
	e := &env{t: t, ns: "e2e-" + name, stream: strings.ToUpper(name), bucket: "e2e-" + name,
		rows: map[string][]sinkworker.Row{}}
	ctx := t.Context()
	if err := st.EnsureNamespace(ctx, e.ns); err != nil {
		t.Fatal(err)
	}
	if err := st.Client.Create(ctx, stack.S3Secret(e.ns, "s3-creds", stack.S3AccessKey, stack.S3SecretKey)); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateBucket(ctx, e.bucket); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(st.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if e.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	for stream, subj := range map[string]string{e.stream: e.subject() + ".>", e.stream + "_DLQ": e.dlqSubject()} {
		if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{subj},
			Storage: jetstream.FileStorage}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *env) subject() string    { return strings.ToLower(e.stream) }
func (e *env) dlqSubject() string { return "dlq." + strings.ToLower(e.stream) }
func (e *env) key(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: e.ns, Name: name}
}

// sink is a WarehouseSink for this env; replicas pods of 2 workers, short
// batches so files appear within seconds.
func (e *env) sink(name string, replicas int32) *jetsinkv1.WarehouseSink {
	d := func(v time.Duration) *metav1.Duration { return &metav1.Duration{Duration: v} }
	return &jetsinkv1.WarehouseSink{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name},
		Spec: jetsinkv1.WarehouseSinkSpec{
			Replicas:          ptr.To(replicas),
			WorkersPerReplica: 2,
			ShutdownTimeout:   d(5 * time.Second),
			Source: jetsinkv1.SourceSpec{
				URL: st.NATSURL, Stream: e.stream, FilterSubjects: []string{e.subject() + ".>"},
				AckWait: d(15 * time.Second), DeadLetterSubject: e.dlqSubject(),
			},
			Destination: jetsinkv1.DestinationSpec{
				Bucket: e.bucket, Prefix: "events/", Endpoint: st.S3URL, ForcePathStyle: true,
				CredentialsSecretRef: &corev1.LocalObjectReference{Name: "s3-creds"},
			},
			Batch: jetsinkv1.BatchSpec{MaxEvents: 1000, MaxAge: d(2 * time.Second)},
		},
	}
}

func (e *env) create(sink *jetsinkv1.WarehouseSink) {
	e.t.Helper()
	if err := st.Client.Create(e.t.Context(), sink); err != nil {
		e.t.Fatalf("create sink: %v", err)
	}
	e.t.Cleanup(func() {
		_ = client.IgnoreNotFound(st.Client.Delete(context.Background(), sink))
	})
}

func (e *env) getSink(name string) *jetsinkv1.WarehouseSink {
	e.t.Helper()
	s := &jetsinkv1.WarehouseSink{}
	if err := st.Client.Get(e.t.Context(), e.key(name), s); err != nil {
		e.t.Fatalf("get sink: %v", err)
	}
	return s
}

// eventually polls cond every 200ms until it holds or timeout passes; cond
// returns a description of the state for the failure message.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, state)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// pods lists a sink's worker pods.
func (e *env) pods(name string) []stack.Pod {
	e.t.Helper()
	pods, err := st.Pods(e.t.Context(), e.key(name))
	if err != nil {
		e.t.Fatalf("list pods: %v", err)
	}
	return pods
}

// running counts a sink's pods whose container runs, and those being
// deleted.
func (e *env) running(name string) (live, terminating int) {
	for _, p := range e.pods(name) {
		if p.Terminating {
			terminating++
		} else if p.ContainerID != "" {
			live++
		}
	}
	return live, terminating
}

// podEvents returns the pod events of a sink since index from.
func podEvents(key types.NamespacedName, from int) []stack.PodEvent {
	var out []stack.PodEvent
	for _, ev := range st.PodEvents()[from:] {
		if ev.Sink == key {
			out = append(out, ev)
		}
	}
	return out
}

func (e *env) waitReady(name string, replicas int) {
	e.t.Helper()
	eventually(e.t, 60*time.Second, fmt.Sprintf("sink %s Ready with %d workers", name, replicas), func() (bool, string) {
		s := e.getSink(name)
		live, term := e.running(name)
		c := apimeta.FindStatusCondition(s.Status.Conditions, jetsinkv1.ConditionReady)
		state := fmt.Sprintf("containers %d (+%d terminating), status %+v", live, term, s.Status)
		return c != nil && c.Status == metav1.ConditionTrue && s.Status.ObservedGeneration == s.Generation &&
			s.Status.ReadyReplicas == int32(replicas) && live == replicas && term == 0, state
	})
}

// publisher publishes numbered events (event_id "<prefix>-<n>") from three
// apps with timestamps over the last three hours.
type publisher struct {
	e      *env
	prefix string
	// padding adds a property of this many bytes to every event.
	padding int
	mu      sync.Mutex
	n       int
}

// flow publishes 100 events every 100 ms until the returned stop is called;
// stop waits for the last batch and may be called more than once.
func (p *publisher) flow() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
				p.publish(100)
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}

var testApps = []string{"web", "ios", "android"}

func (p *publisher) publish(count int) {
	p.e.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now().UTC()
	for range count {
		i := p.n
		app := testApps[i%len(testApps)]
		ev := map[string]any{
			"event_id": fmt.Sprintf("%s-%07d", p.prefix, i), "app_id": app, "event": "page_view",
			"timestamp":  now.Add(-time.Duration(i%180) * time.Minute).Format(time.RFC3339Nano),
			"user_id":    fmt.Sprintf("u%d", i%97),
			"properties": map[string]any{"path": "/p/" + fmt.Sprint(i%13)},
		}
		if p.padding > 0 {
			ev["properties"].(map[string]any)["padding"] = strings.Repeat("x", p.padding)
		}
		body, _ := json.Marshal(ev)
		if _, err := p.e.js.PublishAsync(p.e.subject()+"."+app, body); err != nil {
			p.e.t.Errorf("publish: %v", err)
			return
		}
		p.n++
	}
	select {
	case <-p.e.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		p.e.t.Error("publish: no acks within 30s")
	}
}

func (p *publisher) published() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// readBucket reads every Parquet object (new ones only) and returns how
// often each event_id occurs. It fails the test on a row in the wrong
// partition.
func (e *env) readBucket() (counts map[string]int, files int) {
	e.t.Helper()
	ctx := e.t.Context()
	c := st.S3Client()
	pg := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(e.bucket)})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			e.t.Fatalf("list bucket: %v", err)
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			if _, ok := e.rows[key]; ok || !strings.HasSuffix(key, ".parquet") {
				continue // read before, or the operator's access-check marker
			}
			body := e.object(key)
			rows, err := parquet.Read[sinkworker.Row](bytes.NewReader(body), int64(len(body)))
			if err != nil {
				e.t.Fatalf("parquet %s: %v", key, err)
			}
			for _, r := range rows {
				ts := r.Timestamp.UTC()
				want := fmt.Sprintf("events/app_id=%s/date=%s/hour=%s/", r.AppID, ts.Format("2006-01-02"), ts.Format("15"))
				if !strings.HasPrefix(key, want) {
					e.t.Errorf("event %s (app %s, %s) is in %s, want under %s", r.EventID, r.AppID, ts, key, want)
				}
			}
			e.rows[key] = rows
		}
	}
	counts = map[string]int{}
	for _, rows := range e.rows {
		for _, r := range rows {
			counts[r.EventID]++
		}
	}
	return counts, len(e.rows)
}

// object is the body of the object at key.
func (e *env) object(key string) []byte {
	e.t.Helper()
	out, err := st.S3Client().GetObject(e.t.Context(), &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key)})
	if err != nil {
		e.t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	body, err := io.ReadAll(out.Body)
	if err != nil {
		e.t.Fatalf("read %s: %v", key, err)
	}
	return body
}

// waitAllWritten waits until every published event is in the bucket and
// returns the number of duplicate rows.
func (e *env) waitAllWritten(p *publisher, timeout time.Duration) (dupes int) {
	e.t.Helper()
	var counts map[string]int
	eventually(e.t, timeout, "every published event in the bucket", func() (bool, string) {
		counts, _ = e.readBucket()
		missing := 0
		for i := range p.published() {
			if counts[fmt.Sprintf("%s-%07d", p.prefix, i)] == 0 {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d of %d events missing", missing, p.published())
	})
	for id, n := range counts {
		if n > 1 {
			dupes += n - 1
		}
		if !strings.HasPrefix(id, p.prefix+"-") {
			e.t.Errorf("unexpected event %q in the bucket", id)
		}
	}
	return dupes
}

// consumerInfo reads the durable consumer of the sink called name.
func (e *env) consumerInfo(name string) *jetstream.ConsumerInfo {
	e.t.Helper()
	sink := &jetsinkv1.WarehouseSink{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name}}
	c, err := e.js.Consumer(e.t.Context(), e.stream, workload.ConsumerName(sink))
	if err != nil {
		e.t.Fatalf("consumer: %v", err)
	}
	info, err := c.Info(e.t.Context())
	if err != nil {
		e.t.Fatalf("consumer info: %v", err)
	}
	return info
}

// kubectl runs kubectl against the stack.
func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return st.Kubectl(t.Context(), nil, args...)
}

// endpointMetrics scrapes every endpoint of the sink's metrics Service (its
// EndpointSlices, as Prometheus would discover them) and sums the counters.
func (e *env) endpointMetrics(sink string) (sum map[string]float64, endpoints int) {
	e.t.Helper()
	eps, err := st.ScrapeService(e.t.Context(), e.ns, sink+"-metrics")
	if err != nil {
		e.t.Fatalf("scrape the metrics Service: %v", err)
	}
	sum = map[string]float64{}
	for _, ep := range eps {
		for k, v := range ep.Metrics {
			sum[k] += v
		}
	}
	return sum, len(eps)
}

// keys lists the bucket's objects with their sizes and ETags, sorted.
func (e *env) keys() []string {
	e.t.Helper()
	var out []string
	pg := s3.NewListObjectsV2Paginator(st.S3Client(), &s3.ListObjectsV2Input{Bucket: aws.String(e.bucket)})
	for pg.HasMorePages() {
		page, err := pg.NextPage(e.t.Context())
		if err != nil {
			e.t.Fatalf("list bucket: %v", err)
		}
		for _, o := range page.Contents {
			out = append(out, fmt.Sprintf("%s %d %s", aws.ToString(o.Key), aws.ToInt64(o.Size), aws.ToString(o.ETag)))
		}
	}
	sort.Strings(out)
	return out
}
