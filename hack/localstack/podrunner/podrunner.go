// Package podrunner stands in for a kubelet (and for the bits of
// kube-controller-manager a sink needs) on a machine that has only an API
// server: it watches the Deployments that WarehouseSinks own and runs each
// of their pods as a local process.
//
// For every such Deployment it keeps spec.replicas processes of the pod
// template's first container running, with the template's env (values and
// secretKeyRefs resolved from the Secrets, as a kubelet does at container
// start). A process that exits on its own is restarted with a growing
// back-off, like CrashLoopBackOff. A pod that goes away (scale-down, a roll,
// deletion) gets SIGTERM, then SIGKILL after its template's
// terminationGracePeriodSeconds — the kubelet's contract. A template change
// rolls the pods the way the operator's strategy asks (maxSurge 1,
// maxUnavailable 0): start a new pod, wait until it is ready, stop an old one.
//
// It writes what it sees back to the API: the Deployment's status (replicas,
// updated, ready, available, observedGeneration; ready means the process's
// /readyz answers 200), a Pod object per process with its phase, readiness
// and restarts (deleting one terminates its process, and a replacement
// starts), one EndpointSlice per ready pod for the Services that select it
// (each process listens on its own loopback port), and, since
// envtest has no garbage collector, it deletes the Deployment and Service of
// a sink that no longer exists.
//
// It is test tooling: the product never imports it.
package podrunner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
)

// MetricsAddrEnv is the worker variable the runner overrides with a free
// loopback port per process: every "pod" shares this host's network.
const MetricsAddrEnv = "JETSINK_METRICS_ADDR"

// ManagedBy marks the EndpointSlices the runner writes.
const ManagedBy = "podrunner.jetsink.dev"

// HostAddressAnnotation on an EndpointSlice the runner writes is the IP its
// endpoints really listen on (loopback, which an EndpointSlice may not hold).
const HostAddressAnnotation = "podrunner.jetsink.dev/host-address"

// Options configure a Runner.
type Options struct {
	// Client talks to the API server.
	Client client.Client
	// Commands maps a container's command[0] to a local executable
	// (e.g. "sinkworker" → bin/sinkworker). Unmapped commands are looked up
	// on PATH.
	Commands map[string]string
	// LogDir receives one log file per pod (stdout and stderr, appended
	// across restarts).
	LogDir string
	// ExtraEnv is added to every process before the template's env (what a
	// container image or the node would provide).
	ExtraEnv []string
	// Interval is how often the runner reconciles and probes; default 500ms.
	Interval time.Duration
	// Logger gets one line per pod lifecycle event; default discards.
	Logger *slog.Logger
}

// Runner runs the pods of sink Deployments as local processes.
type Runner struct {
	opts Options
	c    client.Client
	log  *slog.Logger

	mu     sync.Mutex
	deps   map[types.NamespacedName]*deployment
	kick   chan struct{}
	seq    int
	events []Event
}

// Event is something that happened to a pod, kept for tests.
type Event struct {
	Time       time.Time
	Deployment types.NamespacedName
	Pod        string
	// Type is Started, Ready, Exited, Terminating or Killed.
	Type string
	// Detail: exit status, signal, grace period.
	Detail string
}

type deployment struct {
	key  types.NamespacedName
	pods map[string]*pod
}

// pod is one local process standing for one pod of a Deployment.
type pod struct {
	name        string
	hash        string // template hash: which "ReplicaSet" it belongs to
	template    corev1.PodTemplateSpec
	grace       time.Duration
	metricsAddr string
	port        int
	started     time.Time
	restarts    int
	nextStart   time.Time // CrashLoopBackOff: not before this

	cmd         *exec.Cmd
	exited      chan struct{}
	exitErr     error
	ready       bool
	terminating bool
	termStart   time.Time
	killed      bool
	lastErr     string
}

func (p *pod) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// PodInfo describes a running pod, for tests and the demo.
type PodInfo struct {
	Name         string
	PID          int
	MetricsAddr  string
	Ready        bool
	Terminating  bool
	Restarts     int
	GracePeriod  time.Duration
	TemplateHash string
}

// New returns a Runner; Run starts it.
func New(opts Options) *Runner {
	if opts.Interval == 0 {
		opts.Interval = 500 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Runner{opts: opts, c: opts.Client, log: opts.Logger,
		deps: map[types.NamespacedName]*deployment{}, kick: make(chan struct{}, 1)}
}

// Run reconciles until ctx ends, then stops every pod the kubelet way
// (SIGTERM, grace, SIGKILL) and returns once all have exited.
func (r *Runner) Run(ctx context.Context) {
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		r.reconcileAll(ctx)
		select {
		case <-ctx.Done():
			r.stopAll()
			return
		case <-t.C:
		case <-r.kick:
		}
	}
}

func (r *Runner) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Pods returns the current pods of a Deployment, sorted by name.
func (r *Runner) Pods(key types.NamespacedName) []PodInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.deps[key]
	if d == nil {
		return nil
	}
	var out []PodInfo
	for _, p := range d.pods {
		info := PodInfo{Name: p.name, MetricsAddr: p.metricsAddr, Ready: p.ready, Terminating: p.terminating,
			Restarts: p.restarts, GracePeriod: p.grace, TemplateHash: p.hash}
		if p.running() {
			info.PID = p.cmd.Process.Pid
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Events returns what has happened to pods so far.
func (r *Runner) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func (r *Runner) record(d *deployment, p *pod, typ, detail string) {
	r.events = append(r.events, Event{Time: time.Now(), Deployment: d.key, Pod: p.name, Type: typ, Detail: detail})
	r.log.Info("pod "+typ, "deployment", d.key.String(), "pod", p.name, "detail", detail)
}

// reconcileAll is one pass over every sink Deployment.
func (r *Runner) reconcileAll(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	var list appsv1.DeploymentList
	if err := r.c.List(ctx, &list); err != nil {
		r.log.Warn("list deployments", "error", err)
		return
	}
	seen := map[types.NamespacedName]bool{}
	for i := range list.Items {
		dep := &list.Items[i]
		owner := sinkOwner(dep)
		if owner == nil {
			continue
		}
		key := client.ObjectKeyFromObject(dep)
		if r.gcOrphan(ctx, dep, owner) {
			continue
		}
		if !dep.DeletionTimestamp.IsZero() {
			continue
		}
		seen[key] = true
		r.reconcile(ctx, dep)
	}
	// Deployments that are gone: their pods terminate.
	r.mu.Lock()
	var gone []*deployment
	for key, d := range r.deps {
		if !seen[key] {
			gone = append(gone, d)
		}
	}
	r.mu.Unlock()
	for _, d := range gone {
		r.mu.Lock()
		for _, p := range d.pods {
			r.terminate(d, p)
		}
		r.enforceGrace(d)
		r.reap(d)
		views := r.viewsOf(d)
		if len(d.pods) == 0 {
			delete(r.deps, d.key)
		}
		r.mu.Unlock()
		r.syncEndpoints(ctx, d.key, nil, nil)
		r.syncPods(ctx, d.key, nil, views)
	}
}

func sinkOwner(dep *appsv1.Deployment) *metav1.OwnerReference {
	ref := metav1.GetControllerOf(dep)
	if ref == nil || ref.Kind != "WarehouseSink" || ref.APIVersion != jetsinkv1.GroupVersion.String() {
		return nil
	}
	return ref
}

// gcOrphan plays the garbage collector (envtest runs none): the Deployment
// and Service of a sink that no longer exists are deleted. It reports
// whether dep was an orphan.
func (r *Runner) gcOrphan(ctx context.Context, dep *appsv1.Deployment, owner *metav1.OwnerReference) bool {
	var sink jetsinkv1.WarehouseSink
	err := r.c.Get(ctx, types.NamespacedName{Namespace: dep.Namespace, Name: owner.Name}, &sink)
	if err == nil && sink.UID == owner.UID {
		return false
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return false
	}
	r.log.Info("garbage-collecting the children of a deleted sink", "sink", owner.Name, "namespace", dep.Namespace)
	_ = client.IgnoreNotFound(r.c.Delete(ctx, dep))
	var svcs corev1.ServiceList
	if r.c.List(ctx, &svcs, client.InNamespace(dep.Namespace)) == nil {
		for i := range svcs.Items {
			if ref := metav1.GetControllerOf(&svcs.Items[i]); ref != nil && ref.UID == owner.UID {
				_ = client.IgnoreNotFound(r.c.Delete(ctx, &svcs.Items[i]))
			}
		}
	}
	return true
}

// templateHash identifies a pod template, as a ReplicaSet's
// pod-template-hash does.
func templateHash(t *corev1.PodTemplateSpec) string {
	b, _ := json.Marshal(t)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:5])
}

func (r *Runner) reconcile(ctx context.Context, dep *appsv1.Deployment) {
	key := client.ObjectKeyFromObject(dep)
	hash := templateHash(&dep.Spec.Template)
	desired := int(ptr.Deref(dep.Spec.Replicas, 1))

	r.mu.Lock()
	d := r.deps[key]
	if d == nil {
		d = &deployment{key: key, pods: map[string]*pod{}}
		r.deps[key] = d
	}
	r.reap(d)
	r.probe(d)

	var cur, old []*pod
	for _, p := range d.pods {
		if p.terminating {
			continue
		}
		if p.hash == hash {
			cur = append(cur, p)
		} else {
			old = append(old, p)
		}
	}
	// Crashed processes restart in place, after their back-off. Only
	// those reap has seen exit (cmd nil): one that died since is counted
	// and restarted on the next pass.
	for _, p := range append(append([]*pod(nil), cur...), old...) {
		if p.cmd == nil && time.Now().After(p.nextStart) {
			r.start(ctx, d, p)
		}
	}

	readyCount := func(ps []*pod) int {
		n := 0
		for _, p := range ps {
			if p.ready {
				n++
			}
		}
		return n
	}
	switch {
	case len(old) > 0:
		// Rolling update, maxSurge 1, maxUnavailable 0: one new pod at a
		// time, and an old one stops only when that keeps desired ready.
		total := len(cur) + len(old)
		if len(cur) < desired && total < desired+1 {
			cur = append(cur, r.newPod(ctx, d, dep, hash))
			total++
		}
		avail := readyCount(cur) + readyCount(old)
		sortForRemoval(old)
		for len(old) > 0 && total > desired {
			victim := old[0]
			if victim.ready && avail-1 < desired {
				break
			}
			r.terminate(d, victim)
			if victim.ready {
				avail--
			}
			old, total = old[1:], total-1
		}
	case len(cur) < desired:
		for range desired - len(cur) {
			r.newPod(ctx, d, dep, hash)
		}
	case len(cur) > desired:
		sortForRemoval(cur)
		for _, p := range cur[:len(cur)-desired] {
			r.terminate(d, p)
		}
	}
	r.enforceGrace(d)
	status, ready := r.statusOf(d, dep, hash)
	views := r.viewsOf(d)
	r.mu.Unlock()

	r.writeStatus(ctx, dep, status)
	r.syncEndpoints(ctx, key, dep, ready)
	r.syncPods(ctx, key, dep, views)
}

// sortForRemoval puts the pods a ReplicaSet would delete first at the
// front: not ready before ready, then the youngest.
func sortForRemoval(ps []*pod) {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].ready != ps[j].ready {
			return !ps[i].ready
		}
		return ps[i].started.After(ps[j].started)
	})
}

func (r *Runner) newPod(ctx context.Context, d *deployment, dep *appsv1.Deployment, hash string) *pod {
	r.seq++
	p := &pod{
		name:     fmt.Sprintf("%s-%s-%d", dep.Name, hash[:6], r.seq),
		hash:     hash,
		template: *dep.Spec.Template.DeepCopy(),
		grace:    time.Duration(ptr.Deref(dep.Spec.Template.Spec.TerminationGracePeriodSeconds, 30)) * time.Second,
	}
	d.pods[p.name] = p
	r.start(ctx, d, p)
	return p
}

// start runs (or restarts) the pod's process. Failures to build its env (a
// missing Secret) are retried like a kubelet's CreateContainerConfigError.
func (r *Runner) start(ctx context.Context, d *deployment, p *pod) {
	p.ready = false
	p.nextStart = time.Now().Add(time.Second) // retry of a failed start

	ctr := p.template.Spec.Containers[0]
	env, err := r.env(ctx, d.key.Namespace, ctr.Env)
	if err != nil {
		if p.lastErr != err.Error() {
			r.record(d, p, "Failed", err.Error())
		}
		p.lastErr = err.Error()
		p.cmd = nil
		return
	}
	port, err := freePort()
	if err != nil {
		p.lastErr = err.Error()
		return
	}
	p.port = port
	p.metricsAddr = "127.0.0.1:" + strconv.Itoa(port)
	env = append(env, MetricsAddrEnv+"="+p.metricsAddr, "HOSTNAME="+p.name, "POD_NAME="+p.name)

	argv := append(append([]string(nil), ctr.Command...), ctr.Args...)
	if len(argv) == 0 {
		p.lastErr = "container has no command"
		return
	}
	if exe, ok := r.opts.Commands[argv[0]]; ok {
		argv[0] = exe
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append([]string{"PATH=" + os.Getenv("PATH")}, r.opts.ExtraEnv...), env...)
	tmp := filepath.Join(r.opts.LogDir, "tmp", p.name)
	_ = os.MkdirAll(tmp, 0o755)
	cmd.Env = append(cmd.Env, "TMPDIR="+tmp, "HOME="+tmp)
	cmd.Dir = tmp
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(filepath.Join(r.opts.LogDir, d.key.Namespace+"_"+p.name+".log"),
		os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err == nil {
		cmd.Stdout, cmd.Stderr = logf, logf
	}
	if err := cmd.Start(); err != nil { //nolint:gosec // the template's command, by design
		if logf != nil {
			logf.Close()
		}
		r.record(d, p, "Failed", err.Error())
		p.lastErr = err.Error()
		p.cmd = nil
		return
	}
	p.cmd = cmd
	p.started = time.Now()
	p.exited = make(chan struct{})
	p.lastErr = ""
	p.killed = false
	exited := p.exited
	go func() {
		p.exitErr = cmd.Wait()
		if logf != nil {
			logf.Close()
		}
		close(exited)
		r.poke()
	}()
	r.record(d, p, "Started", fmt.Sprintf("pid %d, metrics %s, restarts %d", cmd.Process.Pid, p.metricsAddr, p.restarts))
}

// env resolves a container's env the way a kubelet does: literal values
// (with $(VAR) references left as they are — the operator uses none) and
// secretKeyRefs.
func (r *Runner) env(ctx context.Context, ns string, vars []corev1.EnvVar) ([]string, error) {
	var out []string
	secrets := map[string]*corev1.Secret{}
	for _, v := range vars {
		if v.ValueFrom == nil {
			out = append(out, v.Name+"="+v.Value)
			continue
		}
		ref := v.ValueFrom.SecretKeyRef
		if ref == nil {
			return nil, fmt.Errorf("env %s: only value and secretKeyRef are supported by the pod runner", v.Name)
		}
		optional := ptr.Deref(ref.Optional, false)
		s, ok := secrets[ref.Name]
		if !ok {
			s = &corev1.Secret{}
			err := r.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: ref.Name}, s)
			if apierrors.IsNotFound(err) {
				s = nil
			} else if err != nil {
				return nil, err
			}
			secrets[ref.Name] = s
		}
		if s == nil {
			if optional {
				continue
			}
			return nil, fmt.Errorf("CreateContainerConfigError: secret %q not found", ref.Name)
		}
		val, ok := s.Data[ref.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("CreateContainerConfigError: couldn't find key %s in Secret %s/%s", ref.Key, ns, ref.Name)
		}
		out = append(out, v.Name+"="+string(val))
	}
	return out, nil
}

// reap notices processes that exited. One that exited while terminating is
// removed; one that exited on its own waits for its restart.
func (r *Runner) reap(d *deployment) {
	for name, p := range d.pods {
		if p.cmd == nil || p.running() {
			continue
		}
		if p.terminating {
			if p.exited != nil {
				r.record(d, p, "Exited", exitDetail(p.exitErr, p.killed)+fmt.Sprintf(" after %s", time.Since(p.termStart).Round(time.Millisecond)))
			}
			delete(d.pods, name)
			continue
		}
		// Crashed: restart after a back-off that doubles per restart
		// (CrashLoopBackOff), capped at 10s here to keep tests short.
		p.restarts++
		backoff := min(time.Duration(1<<min(p.restarts-1, 4))*time.Second, 10*time.Second)
		p.nextStart = time.Now().Add(backoff)
		r.record(d, p, "Exited", exitDetail(p.exitErr, false)+fmt.Sprintf(" (restart in %s)", backoff))
		p.ready = false
		p.cmd = nil
		p.exited = nil
	}
}

func exitDetail(err error, killed bool) string {
	s := "exit status 0"
	if err != nil {
		s = err.Error()
	}
	if killed {
		s += " (SIGKILL after the grace period)"
	}
	return s
}

// terminate sends SIGTERM; enforceGrace sends SIGKILL when the grace period
// is over.
func (r *Runner) terminate(d *deployment, p *pod) {
	if p.terminating {
		return
	}
	p.terminating = true
	p.ready = false
	p.termStart = time.Now()
	if !p.running() {
		delete(d.pods, p.name)
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	r.record(d, p, "Terminating", fmt.Sprintf("SIGTERM, grace period %s", p.grace))
}

func (r *Runner) enforceGrace(d *deployment) {
	for _, p := range d.pods {
		if p.terminating && !p.killed && p.running() && time.Since(p.termStart) > p.grace {
			p.killed = true
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			r.record(d, p, "Killed", fmt.Sprintf("SIGKILL: still running %s after SIGTERM", p.grace))
		}
	}
}

// Kill sends SIGKILL to one running pod's process (as if the node lost it),
// for tests. It returns the pod's name.
func (r *Runner) Kill(key types.NamespacedName, pick func([]PodInfo) string) (string, error) {
	name := pick(r.Pods(key))
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.deps[key]
	if d == nil || d.pods[name] == nil || !d.pods[name].running() {
		return "", fmt.Errorf("no running pod %q in %s", name, key)
	}
	p := d.pods[name]
	r.record(d, p, "Killed", "SIGKILL by request")
	return name, syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// probe runs the readiness probe of each running pod: GET /readyz on its
// own port (the template's probe path and port name are the worker's).
func (r *Runner) probe(d *deployment) {
	hc := http.Client{Timeout: 300 * time.Millisecond}
	for _, p := range d.pods {
		if !p.running() || p.terminating {
			p.ready = false
			continue
		}
		path := "/readyz"
		if rp := p.template.Spec.Containers[0].ReadinessProbe; rp != nil && rp.HTTPGet != nil && rp.HTTPGet.Path != "" {
			path = rp.HTTPGet.Path
		}
		resp, err := hc.Get("http://" + p.metricsAddr + path)
		ready := err == nil && resp.StatusCode == http.StatusOK
		if resp != nil {
			resp.Body.Close()
		}
		if ready && !p.ready {
			r.record(d, p, "Ready", p.metricsAddr)
		}
		p.ready = ready
	}
}

// readyEndpoint is a ready pod's port on this host, for EndpointSlices.
type readyEndpoint struct {
	pod  string
	port int
}

func (r *Runner) statusOf(d *deployment, dep *appsv1.Deployment, hash string) (appsv1.DeploymentStatus, []readyEndpoint) {
	var st appsv1.DeploymentStatus
	var ready []readyEndpoint
	st.ObservedGeneration = dep.Generation
	var terminating int32
	for _, p := range d.pods {
		if p.terminating {
			terminating++
			continue
		}
		st.Replicas++
		if p.hash == hash {
			st.UpdatedReplicas++
		}
		if p.ready {
			st.ReadyReplicas++
			st.AvailableReplicas++
			ready = append(ready, readyEndpoint{pod: p.name, port: p.port})
		}
	}
	st.UnavailableReplicas = max(0, ptr.Deref(dep.Spec.Replicas, 1)-st.AvailableReplicas)
	st.TerminatingReplicas = ptr.To(terminating)
	sort.Slice(ready, func(i, j int) bool { return ready[i].pod < ready[j].pod })
	now := metav1.Now()
	avail := corev1.ConditionFalse
	if st.AvailableReplicas >= ptr.Deref(dep.Spec.Replicas, 1) {
		avail = corev1.ConditionTrue
	}
	st.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: avail,
		Reason: "PodRunner", LastUpdateTime: now, LastTransitionTime: now}}
	for _, c := range dep.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == avail {
			st.Conditions[0] = c
		}
	}
	return st, ready
}

func (r *Runner) writeStatus(ctx context.Context, dep *appsv1.Deployment, st appsv1.DeploymentStatus) {
	same := func(a, b appsv1.DeploymentStatus) bool {
		return a.ObservedGeneration == b.ObservedGeneration && a.Replicas == b.Replicas &&
			a.UpdatedReplicas == b.UpdatedReplicas && a.ReadyReplicas == b.ReadyReplicas &&
			a.AvailableReplicas == b.AvailableReplicas && a.UnavailableReplicas == b.UnavailableReplicas &&
			ptr.Deref(a.TerminatingReplicas, 0) == ptr.Deref(b.TerminatingReplicas, 0) &&
			len(a.Conditions) == len(b.Conditions) && (len(a.Conditions) == 0 || a.Conditions[0].Status == b.Conditions[0].Status)
	}
	if same(dep.Status, st) {
		return
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		live := &appsv1.Deployment{}
		if err := r.c.Get(ctx, client.ObjectKeyFromObject(dep), live); err != nil {
			return err
		}
		if live.Generation != dep.Generation {
			return nil // next pass sees the new template
		}
		live.Status = st
		return r.c.Status().Update(ctx, live)
	})
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		r.log.Warn("write deployment status", "deployment", dep.Name, "error", err)
	}
}

// syncEndpoints keeps one EndpointSlice per ready pod for every Service in
// the namespace whose selector matches the pod template (dep nil: none).
func (r *Runner) syncEndpoints(ctx context.Context, key types.NamespacedName, dep *appsv1.Deployment, ready []readyEndpoint) {
	want := map[string]*discoveryv1.EndpointSlice{}
	if dep != nil {
		var svcs corev1.ServiceList
		if err := r.c.List(ctx, &svcs, client.InNamespace(key.Namespace)); err != nil {
			return
		}
		for _, svc := range svcs.Items {
			if len(svc.Spec.Selector) == 0 ||
				!labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)) {
				continue
			}
			for _, e := range ready {
				es := endpointSlice(&svc, e)
				want[es.Name] = es
			}
		}
	}
	var have discoveryv1.EndpointSliceList
	if err := r.c.List(ctx, &have, client.InNamespace(key.Namespace),
		client.MatchingLabels{discoveryv1.LabelManagedBy: ManagedBy, labelDeployment: key.Name}); err != nil {
		return
	}
	for i := range have.Items {
		es := &have.Items[i]
		if _, ok := want[es.Name]; ok {
			delete(want, es.Name)
			continue
		}
		_ = client.IgnoreNotFound(r.c.Delete(ctx, es))
	}
	for _, es := range want {
		es.Labels[labelDeployment] = key.Name
		if err := r.c.Create(ctx, es); err != nil && !apierrors.IsAlreadyExists(err) && ctx.Err() == nil {
			r.log.Warn("create endpointslice", "name", es.Name, "error", err)
		}
	}
}

func endpointSlice(svc *corev1.Service, e readyEndpoint) *discoveryv1.EndpointSlice {
	var ports []discoveryv1.EndpointPort
	for _, p := range svc.Spec.Ports {
		ports = append(ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Port: ptr.To(int32(e.port)), Protocol: ptr.To(p.Protocol)})
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      svc.Name + "-" + e.pod,
			Namespace: svc.Namespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: svc.Name,
				discoveryv1.LabelManagedBy:   ManagedBy,
			},
			Annotations:     map[string]string{HostAddressAnnotation: "127.0.0.1"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID}},
		},
		// The API server refuses loopback IPs (and single-label names) in
		// an EndpointSlice, so the address is the pod's name under a
		// local domain, and HostAddressAnnotation says where it really
		// listens: the port is the real one.
		AddressType: discoveryv1.AddressTypeFQDN,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{e.pod + ".pods.podrunner.local"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: svc.Namespace, Name: e.pod},
		}},
		Ports: ports,
	}
}

// stopAll terminates every pod and waits for all of them to exit, SIGKILLing
// those past their grace period.
func (r *Runner) stopAll() {
	r.mu.Lock()
	for _, d := range r.deps {
		for _, p := range d.pods {
			r.terminate(d, p)
		}
	}
	r.mu.Unlock()
	for {
		r.mu.Lock()
		left := 0
		for _, d := range r.deps {
			r.enforceGrace(d)
			r.reap(d)
			left += len(d.pods)
		}
		r.mu.Unlock()
		if left == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
