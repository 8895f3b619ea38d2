package image

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestImportCommand runs Import with a stand-in for ctr that prints its
// arguments, and checks the command line and that a failure carries ctr's
// output.
func TestImportCommand(t *testing.T) {
	dir := t.TempDir()
	ctr := filepath.Join(dir, "ctr")
	script := "#!/bin/sh\necho \"args: $*\"\n[ -z \"$FAKE_CTR_FAIL\" ] || { echo 'ctr: failed to dial' >&2; exit 1; }\n"
	if err := os.WriteFile(ctr, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := Import(ctx, ctr, "/run/x.sock", "/tmp/images.tar"); err != nil {
		t.Fatalf("Import with a ctr that succeeds: %v", err)
	}
	t.Setenv("FAKE_CTR_FAIL", "1")
	err := Import(ctx, ctr, "/run/x.sock", "/tmp/images.tar")
	if err == nil {
		t.Fatal("Import with a ctr that fails succeeded")
	}
	for _, want := range []string{
		"args: --address /run/x.sock -n k8s.io images import --all-platforms /tmp/images.tar",
		"ctr: failed to dial",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Import's error %q lacks %q", err, want)
		}
	}
}

// TestImportIntoContainerd imports the product image into a running
// containerd, if this machine has one, and removes it again. It never
// starts containerd.
func TestImportIntoContainerd(t *testing.T) {
	ctr, err := exec.LookPath("ctr")
	if err != nil {
		t.Skip("no ctr on PATH")
	}
	address := os.Getenv("CONTAINERD_ADDRESS")
	if address == "" {
		address = "/run/containerd/containerd.sock"
	}
	if _, err := os.Stat(address); err != nil {
		t.Skipf("containerd is not running (no socket %s; set CONTAINERD_ADDRESS for another): %v", address, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, ctr, "--address", address, "--connect-timeout", "2s", "version").CombinedOutput(); err != nil {
		t.Skipf("containerd at %s does not answer ctr version: %v\n%s", address, err, out)
	}

	dir := t.TempDir()
	o, _ := fakeBinaries(t, dir)
	// A name of its own, so that the test neither replaces nor removes the
	// cluster's jetsink/jetsink:local.
	o.Ref = "jetsink/jetsink-importtest:" + strconv.Itoa(os.Getpid())
	archive, w := writeProduct(t, dir, o)
	if err := Import(ctx, ctr, address, archive); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ctr, "--address", address, "-n", "k8s.io", "images", "rm", w.Ref).CombinedOutput(); err != nil {
			t.Errorf("removing %s: %v\n%s", w.Ref, err, out)
		}
	})
	out, err := exec.CommandContext(ctx, ctr, "--address", address, "-n", "k8s.io", "images", "ls", "-q").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr images ls: %v\n%s", err, out)
	}
	if !strings.Contains("\n"+string(out), "\n"+w.Ref+"\n") {
		t.Errorf("after the import, k8s.io has no %s:\n%s", w.Ref, out)
	}
}
