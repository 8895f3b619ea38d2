// Package cluster runs a real single-node Kubernetes on this machine for
// the demo and the end-to-end tests: etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler (built from k8s.io/kubernetes
// by hack/tools), containerd with runc and the CNI bridge plugin (Debian
// packages), kube-proxy and a kubelet, all as host processes.
//
// Start writes a CA and every certificate, starts the components in
// dependency order, imports the given image archives into containerd and
// returns once the node is Ready and the default ServiceAccount exists.
// Stop tears everything down, including what containerd and the kubelet
// leave outside their own directories; Start does the same cleanup first,
// so a crashed run does not poison the next. The paths, ports and bridge
// names are fixed, so one cluster runs per machine: Start takes a lock.
// Why each setting is what it is is said where it is set (config.go,
// network.go).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/jetsink/jetsink/hack/image"
	"github.com/jetsink/jetsink/hack/proc"
)

const (
	// NodeName is the one node's name.
	NodeName = "jetsink-node"
	// Dir and RunDir are where the cluster keeps its files; both are
	// removed by Stop.
	Dir    = "/var/lib/jetsink-cluster"
	RunDir = "/run/jetsink-cluster"
	// lockPath keeps a second cluster (another test package, a demo in
	// another shell) from starting while one runs.
	lockPath   = "/run/jetsink-cluster.lock"
	cniNetwork = "jetsink"
	etcdURL    = "http://127.0.0.1:12379"
	apiPort    = "6443"
)

// Options configure Start.
type Options struct {
	// BinDir holds the tool binaries (etcd, kube-*, kubelet); required.
	BinDir string
	// LogDir receives one log per component; default Dir/logs (removed by
	// Stop).
	LogDir string
	// Images are image archives (docker-archive tarballs) imported into
	// containerd before the kubelet starts. One of them must hold the
	// sandbox image.
	Images []string
	// SandboxImage is the pause image's reference, as containerd names it.
	SandboxImage string
	// LockWait bounds how long Start waits for another cluster to stop;
	// default 20 minutes.
	LockWait time.Duration
	// Progress receives one line per stage; default discards.
	Progress io.Writer
}

// Cluster is a running cluster.
type Cluster struct {
	// Kubeconfig is an admin (system:masters) kubeconfig; Config the same
	// as a rest.Config.
	Kubeconfig string
	Config     *rest.Config
	// LogDir holds the components' logs.
	LogDir string
	// ContainerdAddress is containerd's socket, for ctr.
	ContainerdAddress string

	opts  Options
	pki   *pki
	procs []*proc.Proc // started in order; stopped in reverse
	lock  *os.File
}

// Check says why a cluster cannot run on this machine, or nil.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("the local cluster needs root (the kubelet, containerd and the bridges)")
	}
	for _, b := range []string{"containerd", "runc", "ctr", "iptables", "ip"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s is not installed: apt-get install -y containerd runc containernetworking-plugins iptables iproute2", b)
		}
	}
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/portmap"} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s is missing: apt-get install -y containernetworking-plugins", p)
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
		if _, err2 := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err2 != nil {
			return errors.New("no memory cgroup controller under /sys/fs/cgroup")
		}
	}
	return nil
}

func socketPath(runDir string) string { return filepath.Join(runDir, "containerd.sock") }

func (c *Cluster) file(name string) string { return filepath.Join(Dir, name) }

// Start starts a cluster. On error, what was started is torn down again.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.LockWait == 0 {
		opts.LockWait = 20 * time.Minute
	}
	if opts.LogDir == "" {
		opts.LogDir = filepath.Join(Dir, "logs")
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, b)); err != nil {
			return nil, fmt.Errorf("cluster: %s is missing: run `make tools`", filepath.Join(opts.BinDir, b))
		}
	}
	c = &Cluster{opts: opts, LogDir: opts.LogDir, ContainerdAddress: socketPath(RunDir)}
	if c.lock, err = takeLock(ctx, opts.LockWait, opts.Progress); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = c.Stop()
			c = nil
		}
	}()
	if err := cleanUp(Dir, RunDir); err != nil {
		return c, fmt.Errorf("cluster: clean up after an earlier run: %w", err)
	}
	for _, d := range []string{Dir, RunDir, opts.LogDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return c, err
		}
	}
	steps := []struct {
		what string
		do   func(context.Context) error
	}{
		{"host-only network " + HostIP + "/32 and certificates", c.prepare},
		{"etcd", c.startEtcd},
		{"kube-apiserver on " + HostIP + ":" + apiPort, c.startAPIServer},
		{"kube-controller-manager and kube-scheduler", c.startControllers},
		{"containerd (runc, CNI bridge) and the images", c.startContainerd},
		{"kube-proxy and the kubelet; waiting for a Ready node", c.startNode},
	}
	for _, s := range steps {
		fmt.Fprintf(opts.Progress, "cluster: %s\n", s.what)
		if err := s.do(ctx); err != nil {
			return c, fmt.Errorf("cluster: %s: %w", s.what, err)
		}
	}
	return c, nil
}

// takeLock takes the machine-wide cluster lock, waiting for another
// cluster to stop (flock is released when its holder dies, too).
func takeLock(ctx context.Context, wait time.Duration, progress io.Writer) (*os.File, error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	said := false
	for {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			return f, nil
		}
		if !said {
			fmt.Fprintf(progress, "cluster: another local cluster is running (%s); waiting for it to stop\n", lockPath)
			said = true
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("cluster: another local cluster still holds %s after %s", lockPath, wait)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (c *Cluster) start(name string, args []string, grace time.Duration) (*proc.Proc, error) {
	p, err := proc.Start(name, c.opts.LogDir, filepath.Join(c.opts.BinDir, name), args, nil, grace)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

func (c *Cluster) prepare(context.Context) error {
	if err := c.setUpNetwork(); err != nil {
		return err
	}
	var err error
	if c.pki, err = newPKI(c.file("pki")); err != nil {
		return err
	}
	host := net.ParseIP(HostIP)
	loop := net.ParseIP("127.0.0.1")
	for _, cert := range []struct {
		name, cn string
		orgs     []string
		ips      []net.IP
		dns      []string
	}{
		{"apiserver", "kube-apiserver", nil, []net.IP{host, net.ParseIP(apiServiceIP), loop},
			[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}},
		{"kubelet-serving", "system:node:" + NodeName, []string{"system:nodes"}, []net.IP{host}, []string{NodeName}},
		// The API server's client certificate for the kubelet (logs, exec,
		// port-forward); system:masters may use the kubelet API.
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil},
		{"admin", "jetsink-admin", []string{"system:masters"}, nil, nil},
		{"controller-manager", "system:kube-controller-manager", nil, nil, nil},
		{"scheduler", "system:kube-scheduler", nil, nil, nil},
		{"kubelet", "system:node:" + NodeName, []string{"system:nodes"}, nil, nil},
		{"kube-proxy", "system:kube-proxy", nil, nil, nil},
	} {
		if err := c.pki.cert(cert.name, cert.cn, cert.orgs, cert.ips, cert.dns, cert.ips != nil); err != nil {
			return err
		}
	}
	server := "https://" + net.JoinHostPort(HostIP, apiPort)
	for _, name := range []string{"admin", "controller-manager", "scheduler", "kubelet", "kube-proxy"} {
		if _, err := c.pki.kubeconfig(name, server); err != nil {
			return err
		}
	}
	c.Kubeconfig = c.pki.path("admin.kubeconfig")
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return err
	}
	c.Config.QPS, c.Config.Burst = 100, 200
	return nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	p, err := c.start("etcd", []string{
		"--data-dir=" + c.file("etcd"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=http://127.0.0.1:12380", "--initial-advertise-peer-urls=http://127.0.0.1:12380",
		"--initial-cluster=default=http://127.0.0.1:12380",
		"--unsafe-no-fsync", "--log-level=warn",
	}, 5*time.Second)
	if err != nil {
		return err
	}
	return p.WaitFor(ctx, 20*time.Second, func() bool { return httpOK(http.DefaultClient, etcdURL+"/health") })
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	pki := c.pki.path
	p, err := c.start("kube-apiserver", []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + HostIP, "--advertise-address=" + HostIP, "--secure-port=" + apiPort,
		"--tls-cert-file=" + pki("apiserver.crt"), "--tls-private-key-file=" + pki("apiserver.key"),
		"--client-ca-file=" + pki("ca.crt"),
		"--service-cluster-ip-range=" + serviceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki("sa.pub"), "--service-account-signing-key-file=" + pki("sa.key"),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate=" + pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=false",
		"--profiling=false",
	}, 10*time.Second)
	if err != nil {
		return err
	}
	hc, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		return err
	}
	return p.WaitFor(ctx, 90*time.Second, func() bool { return httpOK(hc, c.Config.Host+"/readyz") })
}

func (c *Cluster) startControllers(context.Context) error {
	pki := c.pki.path
	if _, err := c.start("kube-controller-manager", []string{
		"--kubeconfig=" + pki("controller-manager.kubeconfig"),
		"--authentication-kubeconfig=" + pki("controller-manager.kubeconfig"),
		"--authorization-kubeconfig=" + pki("controller-manager.kubeconfig"),
		"--use-service-account-credentials",
		"--root-ca-file=" + pki("ca.crt"),
		"--service-account-private-key-file=" + pki("sa.key"),
		"--cluster-signing-cert-file=" + pki("ca.crt"), "--cluster-signing-key-file=" + pki("ca.key"),
		"--controllers=*", "--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port=10257",
		"--service-cluster-ip-range=" + serviceCIDR,
	}, 5*time.Second); err != nil {
		return err
	}
	_, err := c.start("kube-scheduler", []string{
		"--kubeconfig=" + pki("scheduler.kubeconfig"),
		"--authentication-kubeconfig=" + pki("scheduler.kubeconfig"),
		"--authorization-kubeconfig=" + pki("scheduler.kubeconfig"),
		"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=10259",
	}, 5*time.Second)
	return err
}

func (c *Cluster) startContainerd(ctx context.Context) error {
	cniConf := c.file("cni/net.d")
	if err := os.MkdirAll(cniConf, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cniConf, "10-"+cniNetwork+".conflist"), []byte(cniConfig(c.file("cni/ipam"))), 0o644); err != nil {
		return err
	}
	conf := c.file("containerd.toml")
	if err := os.WriteFile(conf, []byte(containerdConfig(c.file("containerd"), RunDir, cniConf, c.opts.SandboxImage)), 0o644); err != nil {
		return err
	}
	p, err := proc.Start("containerd", c.opts.LogDir, "containerd", []string{"--config", conf}, nil, 10*time.Second)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	if err := p.WaitFor(ctx, 20*time.Second, func() bool {
		return exec.Command("ctr", "--address", c.ContainerdAddress, "version").Run() == nil
	}); err != nil {
		return err
	}
	for _, img := range c.opts.Images {
		if err := image.Import(ctx, "ctr", c.ContainerdAddress, img); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) startNode(ctx context.Context) error {
	pki := c.pki.path
	proxyConf := c.file("kube-proxy.yaml")
	if err := os.WriteFile(proxyConf, []byte(kubeProxyConfig(pki("kube-proxy.kubeconfig"))), 0o644); err != nil {
		return err
	}
	if _, err := c.start("kube-proxy", []string{"--config=" + proxyConf}, 5*time.Second); err != nil {
		return err
	}
	resolv := c.file("resolv.conf")
	// Pods resolve nothing: every address they use is an IP.
	if err := os.WriteFile(resolv, []byte("options ndots:1\n"), 0o644); err != nil {
		return err
	}
	kubeletConf := c.file("kubelet.yaml")
	if err := os.WriteFile(kubeletConf, []byte(kubeletConfig(c.ContainerdAddress, pki("ca.crt"),
		pki("kubelet-serving.crt"), pki("kubelet-serving.key"), resolv)), 0o644); err != nil {
		return err
	}
	kubelet, err := c.start("kubelet", []string{
		"--config=" + kubeletConf,
		"--kubeconfig=" + pki("kubelet.kubeconfig"),
		"--root-dir=" + c.file("kubelet"),
		"--hostname-override=" + NodeName,
		"--node-ip=" + HostIP,
	}, 10*time.Second)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	return kubelet.WaitFor(ctx, 90*time.Second, func() bool {
		n, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status != corev1.ConditionTrue {
				return false
			}
		}
		_, err = cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil && len(n.Status.Conditions) > 0
	})
}

// Stop stops the node first (the kubelet, then every container), then
// the control plane, and removes what the cluster wrote.
func (c *Cluster) Stop() error {
	var errs []error
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		fmt.Fprintf(c.opts.Progress, "cluster: stopping %s\n", p.Name)
		if p.Name == "kubelet" {
			p.Stop()
			// The containers outlive the kubelet; kill them before
			// containerd goes, so no shim is left behind.
			killCgroups()
			continue
		}
		if p.Name == "kube-proxy" {
			p.Stop()
			_ = exec.Command(filepath.Join(c.opts.BinDir, "kube-proxy"), "--cleanup").Run()
			continue
		}
		p.Stop()
	}
	c.procs = nil
	if c.lock != nil {
		errs = append(errs, cleanUp(Dir, RunDir))
		c.lock.Close()
		c.lock = nil
	}
	return errors.Join(errs...)
}

func httpOK(hc *http.Client, url string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
