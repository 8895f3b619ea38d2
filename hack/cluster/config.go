package cluster

import "fmt"

// containerdConfig is containerd's configuration (version 2) with its own
// root, state and socket, so it never meets another containerd. Root here
// lacks CAP_SYS_RESOURCE: runc cannot write a negative oom_score_adj, and
// restrict_oom_score_adj keeps CRI from asking it to.
func containerdConfig(root, state, cniConfDir, sandboxImage string) string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  tolerate_missing_hugetlb_controller = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, root, state, socketPath(state), socketPath(state)+".ttrpc", root+"/opt", sandboxImage, cniConfDir)
}

// cniConfig puts pods on their own bridge with routes to the service range
// and the host address only (no default route), and no masquerading.
func cniConfig(ipamDir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": %q}, {"dst": %q}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, cniNetwork, podBridge, ipamDir, podSubnet, podGateway, serviceCIDR, HostIP+"/32")
}

// kubeProxyConfig runs kube-proxy in iptables mode with its conntrack
// settings zeroed (so it changes no sysctl) and NodePorts on the host
// address only.
func kubeProxyConfig(kubeconfig string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %q
mode: iptables
hostnameOverride: %q
clusterCIDR: %q
bindAddress: %q
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [%q]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, kubeconfig, NodeName, podSubnet, HostIP, HostIP+"/32")
}

// kubeletConfig: cgroup v1 with the cgroupfs driver, webhook authn/authz
// with anonymous off, a serving certificate from the cluster's CA, no
// static pods, image GC off (imported images cannot be pulled again) and
// low eviction thresholds (a shared test machine's disk is often full).
func kubeletConfig(containerd, ca, cert, key, resolv string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://%s
imageServiceEndpoint: unix://%s
address: %q
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %q
authorization:
  mode: Webhook
tlsCertFile: %q
tlsPrivateKeyFile: %q
resolvConf: %q
staticPodPath: ""
clusterDomain: cluster.local
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
serializeImagePulls: false
syncFrequency: 10s
nodeStatusUpdateFrequency: 2s
fileCheckFrequency: 0s
`, containerd, containerd, HostIP, ca, cert, key, resolv)
}
