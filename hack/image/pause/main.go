// Command pause is the sandbox ("pause") container of the local cluster's
// pods: the CRI runs it first in every pod to hold the pod's namespaces. It
// only waits for SIGTERM or SIGINT and exits 0. As PID 1 of its container it
// gets no default signal handling from the kernel, so it must handle the
// signals itself. Unlike the upstream pause it reaps no zombies, which only
// matters to pods with shareProcessNamespace.
//
// hack/image compiles it statically into the image jetsink/pause:local.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
