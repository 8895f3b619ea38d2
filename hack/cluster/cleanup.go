package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cleanUp removes everything a cluster leaves on the machine, running or
// crashed: the pods' processes (found through the kubepods cgroups, so a
// container whose shim outlived a killed run dies too), containerd's shims,
// every mount under the cluster's directories, the cgroups, the files
// containerd, CNI and the kubelet write outside their roots, the network.
// Start runs it first, so a crashed run never poisons the next one.
func cleanUp(dir, runDir string) error {
	var errs []error
	killCgroups()
	killShims(socketPath(runDir))
	errs = append(errs, unmountUnder(dir, runDir, "/var/lib/kubelet")...)
	if err := removeCgroups(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, cleanNetwork(dir)...)
	for _, glob := range []string{"/var/lib/cni/results/" + cniNetwork + "-*", "/var/log/pods/*", "/var/log/containers/*"} {
		matches, _ := filepath.Glob(glob)
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// The kubelet writes its device-plugin socket here whatever --root-dir
	// says; a containerd shim leaves its socket under /run/containerd/s.
	for _, p := range []string{"/var/lib/kubelet/device-plugins", runDir, dir} {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	_ = os.Remove("/var/lib/kubelet") // only when empty
	if !containerdRunning() {
		_ = os.RemoveAll("/run/containerd/s")
	}
	return errors.Join(errs...)
}

// cgroupDirs lists every kubepods cgroup directory, deepest first.
func cgroupDirs() []string {
	var dirs []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	return dirs
}

func killCgroups() {
	for _, d := range cgroupDirs() {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// removeCgroups removes the kubepods cgroups once their processes are gone
// (a killed process leaves its cgroup a moment later).
func removeCgroups() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		for _, d := range cgroupDirs() {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				left = append(left, d)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroups not removed: %v", left)
		}
		killCgroups()
		time.Sleep(200 * time.Millisecond)
	}
}

// killShims kills the containerd shims of this cluster's containerd: their
// command line names its socket.
func killShims(socket string) {
	for _, pid := range pidsWithCmdline(func(args []string) bool {
		return strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") && contains(args, socket)
	}) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func containerdRunning() bool {
	return len(pidsWithCmdline(func(args []string) bool { return filepath.Base(args[0]) == "containerd" })) > 0
}

func pidsWithCmdline(match func(args []string) bool) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		if match(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func contains(args []string, s string) bool {
	for _, a := range args {
		if a == s {
			return true
		}
	}
	return false
}

// unmountUnder detaches every mount below the given directories (secret
// volumes, container root filesystems, network namespaces), deepest first.
func unmountUnder(prefixes ...string) []error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return []error{err}
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := strings.ReplaceAll(fields[4], `\040`, " ")
		for _, p := range prefixes {
			if mp == p || strings.HasPrefix(mp, p+"/") {
				points = append(points, mp)
				break
			}
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, mp := range points {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errs
}

// Leftovers lists what a stopped cluster left on the machine: processes
// that name its directories (the components, containerd's shims), mounts
// under them, kubepods cgroups, its bridges, iptables chains and its
// directories. Empty after a clean Stop.
func Leftovers() []string {
	var left []string
	for _, pid := range pidsWithCmdline(func(args []string) bool {
		for _, a := range args {
			if strings.Contains(a, Dir) || strings.Contains(a, RunDir) {
				return true
			}
		}
		return false
	}) {
		cmd, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		name, _, _ := strings.Cut(string(cmd), "\x00")
		left = append(left, fmt.Sprintf("process %d (%s)", pid, name))
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 4 && (strings.HasPrefix(f[4], Dir) || strings.HasPrefix(f[4], RunDir)) {
				left = append(left, "mount "+f[4])
			}
		}
	}
	for _, d := range cgroupDirs() {
		left = append(left, "cgroup "+d)
	}
	for _, dev := range []string{podBridge, hostBridge} {
		if exec.Command("ip", "link", "show", dev).Run() == nil {
			left = append(left, "link "+dev)
		}
	}
	for _, table := range []string{"filter", "nat", "mangle"} {
		out, _ := exec.Command("iptables-save", "-t", table).Output()
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, ":") && ours(strings.Fields(line)[0][1:]) {
				left = append(left, "iptables -t "+table+" chain "+strings.Fields(line)[0][1:])
			}
		}
	}
	for _, d := range []string{Dir, RunDir} {
		if _, err := os.Stat(d); err == nil {
			left = append(left, "directory "+d)
		}
	}
	return left
}
