package stack

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/jetsink/jetsink/controllers/workload"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// Pod is what the tests read of one worker pod.
type Pod struct {
	Name, UID, IP string
	// Ready is the pod's Ready condition; Terminating says it is being
	// deleted.
	Ready, Terminating bool
	Restarts           int32
	// GracePeriod is the pod's terminationGracePeriodSeconds.
	GracePeriod time.Duration
	// TemplateHash is the ReplicaSet's pod-template-hash label.
	TemplateHash string
	// ContainerID is the worker container's ID in containerd ("" before
	// it starts).
	ContainerID string
}

// MetricsURL is the worker's Prometheus endpoint, reachable from the host.
func (p Pod) MetricsURL() string {
	return "http://" + net.JoinHostPort(p.IP, strconv.Itoa(config.MetricsPort)) + "/metrics"
}

// Pods lists the worker pods of a sink, as the API server has them.
func (s *Stack) Pods(ctx context.Context, sink types.NamespacedName) ([]Pod, error) {
	return s.listPods(ctx, client.InNamespace(sink.Namespace),
		client.MatchingLabels{workload.LabelName: workload.WorkerName, workload.LabelInstance: sink.Name})
}

// ManagerPods lists the chart's manager pods.
func (s *Stack) ManagerPods(ctx context.Context) ([]Pod, error) {
	return s.listPods(ctx, client.InNamespace(ManagerNamespace), client.MatchingLabels{"app.kubernetes.io/component": "manager"})
}

func (s *Stack) listPods(ctx context.Context, opts ...client.ListOption) ([]Pod, error) {
	var list corev1.PodList
	if err := s.Client.List(ctx, &list, opts...); err != nil {
		return nil, err
	}
	out := make([]Pod, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, podOf(&list.Items[i]))
	}
	return out, nil
}

func podOf(p *corev1.Pod) Pod {
	pod := Pod{
		Name: p.Name, UID: string(p.UID), IP: p.Status.PodIP,
		Terminating:  p.DeletionTimestamp != nil,
		GracePeriod:  time.Duration(ptr.Deref(p.Spec.TerminationGracePeriodSeconds, 0)) * time.Second,
		TemplateHash: p.Labels["pod-template-hash"],
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			pod.Ready = c.Status == corev1.ConditionTrue
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		pod.Restarts += cs.RestartCount
		if cs.State.Running != nil {
			pod.ContainerID = cs.ContainerID
		}
	}
	return pod
}

// KillContainer sends SIGKILL to a pod's running container through the
// container runtime, as the kernel's OOM killer or a crash would end it:
// the kubelet sees the container die and restarts it.
func (s *Stack) KillContainer(ctx context.Context, pod Pod) error {
	id, ok := strings.CutPrefix(pod.ContainerID, "containerd://")
	if !ok {
		return fmt.Errorf("pod %s has no running containerd container (%q)", pod.Name, pod.ContainerID)
	}
	out, err := exec.CommandContext(ctx, "ctr", "--address", s.Cluster.ContainerdAddress, "-n", "k8s.io",
		"tasks", "kill", "--signal", "SIGKILL", id).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr tasks kill %s: %w: %s", id, err, out)
	}
	return nil
}

// PodEvent is a change in a worker pod's life that the kubelet reported.
type PodEvent struct {
	Sink types.NamespacedName
	Pod  string
	// Type is Terminating (deletion began; Detail names the grace period),
	// Exited (a container ended with status 0) or Killed (with any other
	// status; Reason is the kubelet's, e.g. Error or OOMKilled).
	Type     string
	ExitCode int32
	Reason   string
	Detail   string
}

// PodEvents returns every worker pod event seen since Start, in order.
func (s *Stack) PodEvents() []PodEvent { return s.pods.events() }

// podWatch records PodEvents from a watch of every worker pod. The kubelet
// writes a container's terminated state before it deletes the pod, so the
// watch sees every exit, also of pods that are gone.
type podWatch struct {
	mu     sync.Mutex
	log    []PodEvent
	seen   map[string]bool // "<uid>/terminating" and terminated container IDs
	cancel context.CancelFunc
}

func watchPods(cfg *rest.Config) (*podWatch, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &podWatch{seen: map[string]bool{}, cancel: cancel}
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = workload.LabelName + "=" + workload.WorkerName
	}))
	inf := f.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.observe(o) },
		UpdateFunc: func(_, o any) { w.observe(o) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			w.observe(o)
		},
	}); err != nil {
		cancel()
		return nil, err
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		cancel()
		return nil, fmt.Errorf("localstack: the pod watch did not sync")
	}
	return w, nil
}

func (w *podWatch) observe(o any) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	sink := types.NamespacedName{Namespace: p.Namespace, Name: p.Labels[workload.LabelInstance]}
	w.mu.Lock()
	defer w.mu.Unlock()
	if p.DeletionTimestamp != nil && !w.seen[string(p.UID)+"/terminating"] {
		w.seen[string(p.UID)+"/terminating"] = true
		w.log = append(w.log, PodEvent{Sink: sink, Pod: p.Name, Type: "Terminating",
			Detail: fmt.Sprintf("grace period %ds", ptr.Deref(p.DeletionGracePeriodSeconds, 0))})
	}
	for _, cs := range p.Status.ContainerStatuses {
		for _, t := range []*corev1.ContainerStateTerminated{cs.LastTerminationState.Terminated, cs.State.Terminated} {
			if t == nil || t.ContainerID == "" || w.seen[t.ContainerID] {
				continue
			}
			w.seen[t.ContainerID] = true
			ev := PodEvent{Sink: sink, Pod: p.Name, Type: "Exited", ExitCode: t.ExitCode, Reason: t.Reason,
				Detail: fmt.Sprintf("exit code %d (%s)", t.ExitCode, t.Reason)}
			if t.ExitCode != 0 {
				ev.Type = "Killed"
			}
			w.log = append(w.log, ev)
		}
	}
}

func (w *podWatch) events() []PodEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]PodEvent(nil), w.log...)
}

func (w *podWatch) stop() { w.cancel() }
