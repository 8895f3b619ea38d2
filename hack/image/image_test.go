package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// fakeBinaries writes small stand-ins for manager, sinkworker and
// sinkworker-iceberg (the real ones are tens of MB) and returns their paths
// and contents.
func fakeBinaries(t *testing.T, dir string) (ProductOptions, map[string][]byte) {
	t.Helper()
	o := ProductOptions{Manager: filepath.Join(dir, "manager"), Worker: filepath.Join(dir, "sinkworker"),
		TableWorker: filepath.Join(dir, "sinkworker-iceberg")}
	want := map[string][]byte{}
	for _, bin := range []string{o.Manager, o.Worker, o.TableWorker} {
		name := filepath.Base(bin)
		want["usr/local/bin/"+name] = []byte("\x7fELF fake " + name + "\n")
		// 0700 on the host: the image's 0755 must not come from the host's mode.
		if err := os.WriteFile(bin, want["usr/local/bin/"+name], 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return o, want
}

// readBack loads the image named ref from the archive at path.
func readBack(t *testing.T, path, ref string) v1.Image {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(path, &tag)
	if err != nil {
		t.Fatalf("%s from %s: %v", ref, path, err)
	}
	return img
}

type entry struct {
	hdr  *tar.Header
	data []byte
}

// layerEntries reads the image's only layer.
func layerEntries(t *testing.T, img v1.Image) map[string]entry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	entries := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := entries[hdr.Name]; dup {
			t.Errorf("%s twice in the layer", hdr.Name)
		}
		entries[hdr.Name] = entry{hdr, data}
	}
}

func configFile(t *testing.T, img v1.Image) *v1.ConfigFile {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf
}

// writeProduct builds the product image from o into <dir>/images.tar.
func writeProduct(t *testing.T, dir string, o ProductOptions) (string, Written) {
	t.Helper()
	img, err := Product(o)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "images.tar")
	written, err := Write(archive, img)
	if err != nil {
		t.Fatal(err)
	}
	if len(written) != 1 {
		t.Fatalf("Write reported %v, want one image", written)
	}
	return archive, written[0]
}

func TestProductImage(t *testing.T) {
	dir := t.TempDir()
	o, want := fakeBinaries(t, dir)
	archive, w := writeProduct(t, dir, o)
	if w.Ref != "docker.io/jetsink/jetsink:local" {
		t.Errorf("written as %q, want docker.io/jetsink/jetsink:local", w.Ref)
	}
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(archive) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || !slices.Equal(m[0].RepoTags, []string{w.Ref}) {
		t.Errorf("manifest.json = %+v, want one image tagged %s", m, w.Ref)
	}

	img := readBack(t, archive, w.Ref)
	if id, _ := img.ConfigName(); id != w.ID {
		t.Errorf("archive's image ID %s, Write reported %s", id, w.ID)
	}
	if d, _ := img.Digest(); d != w.Digest {
		t.Errorf("archive's image digest %s, Write reported %s", d, w.Digest)
	}
	cf := configFile(t, img)
	if cf.OS != "linux" || cf.Architecture == "" {
		t.Errorf("platform %s/%s, want linux/<arch>", cf.OS, cf.Architecture)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("User %q, want 65532:65532", cf.Config.User)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"manager"}) {
		t.Errorf("Entrypoint %q, want [manager]", cf.Config.Entrypoint)
	}
	if !slices.Contains(cf.Config.Env, "PATH=/usr/local/bin:/usr/bin:/bin") {
		t.Errorf("Env %q lacks PATH=/usr/local/bin:/usr/bin:/bin", cf.Config.Env)
	}
	if !cf.Created.Equal(time.Unix(0, 0)) {
		t.Errorf("Created %s, want the epoch", cf.Created)
	}

	files := layerEntries(t, img)
	for n, data := range want {
		e, ok := files[n]
		switch {
		case !ok:
			t.Errorf("no %s in the layer", n)
		case e.hdr.Typeflag != tar.TypeReg || e.hdr.Mode != 0o755:
			t.Errorf("%s: type %c mode %o, want a regular file 0755", n, e.hdr.Typeflag, e.hdr.Mode)
		case !bytes.Equal(e.data, data):
			t.Errorf("%s holds %q, want %q", n, e.data, data)
		}
	}
	if e, ok := files["tmp"]; !ok || e.hdr.Typeflag != tar.TypeDir || e.hdr.Mode != 0o1777 {
		t.Errorf("tmp: %+v, want a directory 1777", e.hdr)
	}
	if !strings.Contains(string(files["etc/passwd"].data), "\nnonroot:x:65532:65532:") {
		t.Errorf("etc/passwd has no nonroot 65532:\n%s", files["etc/passwd"].data)
	}
	if !strings.Contains(string(files["etc/group"].data), "\nnonroot:x:65532:") {
		t.Errorf("etc/group has no nonroot 65532:\n%s", files["etc/group"].data)
	}
	host, err := os.ReadFile(HostCACerts)
	ca, inImage := files["etc/ssl/certs/ca-certificates.crt"]
	switch {
	case errors.Is(err, os.ErrNotExist):
		if inImage {
			t.Errorf("the host has no %s, yet the image has one", HostCACerts)
		}
	case err != nil:
		t.Fatal(err)
	case !inImage:
		t.Errorf("no etc/ssl/certs/ca-certificates.crt in the layer, though the host has %s", HostCACerts)
	case !bytes.Equal(ca.data, host):
		t.Errorf("the image's CA bundle (%d bytes) is not the host's (%d bytes)", len(ca.data), len(host))
	}
	for n, e := range files {
		if e.hdr.Uid != 0 || e.hdr.Gid != 0 || !e.hdr.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: owner %d:%d, time %s; want root's, at the epoch", n, e.hdr.Uid, e.hdr.Gid, e.hdr.ModTime)
		}
		for d := filepath.Dir(n); d != "."; d = filepath.Dir(d) {
			if p, ok := files[d]; !ok || p.hdr.Typeflag != tar.TypeDir {
				t.Errorf("%s: no directory entry for its parent %s", n, d)
			}
		}
	}
}

func TestProductReproducible(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	oa, _ := fakeBinaries(t, a)
	ob, _ := fakeBinaries(t, b)
	// Other paths and times on the host must not change the image.
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := os.Chtimes(ob.Manager, old, old); err != nil {
		t.Fatal(err)
	}
	_, wa := writeProduct(t, a, oa)
	_, wb := writeProduct(t, b, ob)
	if wa.ID != wb.ID || wa.Digest != wb.Digest {
		t.Errorf("same binaries, different images:\n%s\n%s", wa, wb)
	}

	// And the digests do depend on the binaries.
	c := t.TempDir()
	oc, _ := fakeBinaries(t, c)
	if err := os.WriteFile(oc.Worker, []byte("another worker"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, wc := writeProduct(t, c, oc)
	if wc.ID == wa.ID || wc.Digest == wa.Digest {
		t.Errorf("another sinkworker, same image: %s", wc)
	}
}

func TestProductCACertsAndRef(t *testing.T) {
	dir := t.TempDir()
	o, _ := fakeBinaries(t, dir)
	o.CACerts = filepath.Join(dir, "ca.crt")
	if _, err := Product(o); err == nil {
		t.Error("Product with a missing CACerts file succeeded")
	}
	if err := os.WriteFile(o.CACerts, []byte("-----BEGIN CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o.Ref = "example.com/jetsink:dev"
	archive, w := writeProduct(t, dir, o)
	if w.Ref != "example.com/jetsink:dev" {
		t.Errorf("written as %q, want example.com/jetsink:dev", w.Ref)
	}
	ca := layerEntries(t, readBack(t, archive, w.Ref))["etc/ssl/certs/ca-certificates.crt"]
	if string(ca.data) != "-----BEGIN CERTIFICATE-----\n" || ca.hdr.Mode != 0o644 {
		t.Errorf("CA bundle %q mode %o, want the given file's content, 0644", ca.data, ca.hdr.Mode)
	}

	if _, err := Product(ProductOptions{Manager: o.Manager}); err == nil {
		t.Error("Product without a sinkworker succeeded")
	}
	if _, err := Product(ProductOptions{Manager: o.Manager, Worker: o.Worker}); err == nil {
		t.Error("Product without a sinkworker-iceberg succeeded")
	}
}

func TestQualify(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "docker.io/jetsink/jetsink:local",
		"jetsink/pause:local":       "docker.io/jetsink/pause:local",
		"pause:3.10":                "docker.io/library/pause:3.10",
		"index.docker.io/a/b:c":     "docker.io/a/b:c",
		"registry.k8s.io/pause:3.9": "registry.k8s.io/pause:3.9",
		"localhost:5000/jetsink:x":  "localhost:5000/jetsink:x",
	} {
		got, err := qualify(in, DefaultProductRef)
		if err != nil || got.String() != want {
			t.Errorf("qualify(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	// Without a tag the kubelet and ctr would disagree on :latest; demand one.
	if got, err := qualify("jetsink/jetsink", ""); err == nil {
		t.Errorf("qualify without a tag = %q, want an error", got)
	}
}

// pauseDir holds the pause binary that the tests compile once, lazily.
var (
	pauseDir  string
	pauseOnce = sync.OnceValues(func() (string, error) {
		return BuildPauseBinary(context.Background(), pauseDir)
	})
)

func TestMain(m *testing.M) {
	var err error
	if pauseDir, err = os.MkdirTemp("", "jetsink-pause-"); err != nil {
		panic(err)
	}
	code := m.Run()
	_ = os.RemoveAll(pauseDir)
	os.Exit(code)
}

func pauseBinary(t *testing.T) string {
	t.Helper()
	bin, err := pauseOnce()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestPauseBinary(t *testing.T) {
	bin := pauseBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a dynamic loader: not static", bin)
		}
	}

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(bin)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			t.Fatalf("pause exited by itself: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pause after %v: %v, want exit 0", sig, err)
			}
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("pause still runs 5 s after %v", sig)
		}
	}
}

// TestArchiveWithPause writes both images into one archive, as Build does
// for ctr import.
func TestArchiveWithPause(t *testing.T) {
	dir := t.TempDir()
	o, _ := fakeBinaries(t, dir)
	archive := filepath.Join(dir, "images.tar")
	written, err := Build(context.Background(), archive, o, PauseOptions{Binary: pauseBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	refs := []string{}
	for _, w := range written {
		refs = append(refs, w.Ref)
	}
	if !slices.Equal(refs, []string{"docker.io/jetsink/jetsink:local", "docker.io/jetsink/pause:local"}) {
		t.Errorf("wrote %q", refs)
	}

	img := readBack(t, archive, "docker.io/jetsink/pause:local")
	cf := configFile(t, img)
	if !slices.Equal(cf.Config.Entrypoint, []string{"/pause"}) || cf.Config.User != "65535:65535" {
		t.Errorf("pause config: entrypoint %q user %q, want [/pause] 65535:65535", cf.Config.Entrypoint, cf.Config.User)
	}
	want, err := os.ReadFile(pauseBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	files := layerEntries(t, img)
	if p := files["pause"]; p.hdr == nil || p.hdr.Mode != 0o755 || !bytes.Equal(p.data, want) {
		t.Errorf("the layer's pause is not the binary, 0755 (%d entries)", len(files))
	}
	// The product image is in the same archive.
	if u := configFile(t, readBack(t, archive, "docker.io/jetsink/jetsink:local")).Config.User; u != "65532:65532" {
		t.Errorf("product image in the shared archive runs as %q", u)
	}
}

func TestWriteRejectsARefTwice(t *testing.T) {
	dir := t.TempDir()
	o, _ := fakeBinaries(t, dir)
	img, err := Product(o)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "images.tar")
	if _, err := Write(archive, img, img); err == nil {
		t.Error("Write of one reference twice succeeded")
	}
	if _, err := os.Stat(archive); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed Write left %s: %v", archive, err)
	}
}

// A dynamically linked binary would fail in the container with a bare
// "exec /usr/local/bin/manager: no such file or directory"; the build
// refuses it and says how to build it.
func TestProductRefusesDynamicBinary(t *testing.T) {
	dynamic := "/bin/true" // Debian's coreutils are dynamically linked
	f, err := elf.Open(dynamic)
	if err != nil {
		t.Skipf("no ELF %s here: %v", dynamic, err)
	}
	f.Close()
	_, err = Product(ProductOptions{Manager: dynamic, Worker: dynamic, TableWorker: dynamic})
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("Product of a dynamically linked binary: %v, want a refusal naming CGO_ENABLED=0", err)
	}
}
