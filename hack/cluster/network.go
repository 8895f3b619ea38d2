package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// The cluster's network never leaves the machine: the control plane binds
// one /32 on a host-only bridge (HostIP), pods live on a second bridge that
// CNI creates, and their only routes are the service range and HostIP — no
// default route, so a pod cannot reach anything else. The bridge plugin
// turns ip_forward on; the FORWARD rules below let only pod-to-pod traffic
// through, and teardown restores ip_forward.
const (
	HostIP      = "10.250.0.1"
	hostBridge  = "jsk-host0"
	podBridge   = "jsk-cni0"
	podSubnet   = "10.244.0.0/24"
	podGateway  = "10.244.0.1"
	serviceCIDR = "10.96.0.0/16"
	// apiServiceIP is the first address of serviceCIDR: the `kubernetes`
	// Service, which the API server's certificate must name.
	apiServiceIP = "10.96.0.1"
	forwardChain = "JETSINK-FORWARD"
	ipForward    = "/proc/sys/net/ipv4/ip_forward"
)

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (c *Cluster) setUpNetwork() error {
	// Saved in the cluster's directory, so a cleanup after a crash
	// restores it too.
	if b, err := os.ReadFile(ipForward); err == nil {
		if err := os.WriteFile(c.file("ip_forward.was"), b, 0o644); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"link", "add", hostBridge, "type", "bridge"},
		{"addr", "add", HostIP + "/32", "dev", hostBridge},
		{"link", "set", hostBridge, "up"},
	} {
		if err := run("ip", args...); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"-N", forwardChain},
		{"-A", forwardChain, "-i", podBridge, "-o", podBridge, "-j", "ACCEPT"},
		{"-A", forwardChain, "-i", podBridge, "-j", "DROP"},
		{"-A", forwardChain, "-o", podBridge, "-j", "DROP"},
		{"-I", "FORWARD", "1", "-j", forwardChain},
	} {
		if err := run("iptables", append([]string{"-w", "-t", "filter"}, args...)...); err != nil {
			return err
		}
	}
	return nil
}

// cleanNetwork removes the bridges, the cluster's and kube-proxy's and the
// kubelet's iptables chains, and restores ip_forward. It runs before a start
// too, so it tolerates what is not there.
func cleanNetwork(stateDir string) []error {
	var errs []error
	for _, dev := range []string{podBridge, hostBridge} {
		if exec.Command("ip", "link", "show", dev).Run() == nil {
			if err := run("ip", "link", "del", dev); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, ipt := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(ipt); err != nil {
			continue
		}
		for _, table := range []string{"filter", "nat", "mangle"} {
			errs = append(errs, cleanChains(ipt, table)...)
		}
	}
	if b, err := os.ReadFile(stateDir + "/ip_forward.was"); err == nil {
		if err := os.WriteFile(ipForward, b, 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// ours names the chains this cluster (or its kube-proxy and kubelet) made.
func ours(chain string) bool {
	return strings.HasPrefix(chain, "KUBE-") || strings.HasPrefix(chain, "JETSINK-")
}

// cleanChains deletes every rule that jumps to one of our chains from a
// built-in chain, then flushes and deletes our chains.
func cleanChains(ipt, table string) []error {
	out, err := exec.Command(ipt+"-save", "-t", table).Output()
	if err != nil {
		return nil // the table does not exist here
	}
	var chains []string
	var jumps [][]string
	for _, line := range strings.Split(string(out), "\n") {
		f := splitRule(line)
		switch {
		case strings.HasPrefix(line, ":") && ours(strings.TrimPrefix(f[0], ":")):
			chains = append(chains, strings.TrimPrefix(f[0], ":"))
		case strings.HasPrefix(line, "-A ") && !ours(f[1]):
			for i := 2; i+1 < len(f); i++ {
				if (f[i] == "-j" || f[i] == "-g") && ours(f[i+1]) {
					jumps = append(jumps, append([]string{"-D"}, f[1:]...))
					break
				}
			}
		}
	}
	var errs []error
	for _, j := range jumps {
		if err := run(ipt, append([]string{"-w", "-t", table}, j...)...); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ch := range chains {
		_ = run(ipt, "-w", "-t", table, "-F", ch)
	}
	for _, ch := range chains {
		if err := run(ipt, "-w", "-t", table, "-X", ch); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// splitRule splits an iptables-save line into arguments, keeping a quoted
// comment ("kubernetes service portals") as one.
func splitRule(line string) []string {
	var args []string
	var cur strings.Builder
	quoted, have := false, false
	for _, r := range line {
		switch {
		case r == '"':
			quoted, have = !quoted, true
		case r == ' ' && !quoted:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}
