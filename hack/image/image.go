// Package image builds, without Docker, the container images the local
// single-node cluster (containerd 1.6 and a kubelet) runs, and imports them
// into containerd:
//
//	manager, sinkworker, sinkworker-iceberg, host CA bundle ──> Product ──┐
//	hack/image/pause ─(go build)─> pause ──────────────────> Pause ───┤
//	                                                                  └─> Write ──> one docker-archive tarball
//	                                                                                   │
//	                     containerd's k8s.io namespace, where the kubelet looks <── Import (ctr images import)
//
// Each image is a single layer on scratch, made in memory from the given
// files with fixed timestamps, owners and entry order, so the same binaries
// give the same image: the same ID, and with the same Go release (its gzip
// makes the compressed layers) the same digest. The product image's config is
// the Dockerfile's final stage (dockerfile_test.go keeps the two in step);
// its filesystem stands in for distroless static: a CA bundle, /etc/passwd
// and /etc/group with nonroot (65532), and a world-writable /tmp.
//
// Write names the images fully qualified (docker.io/jetsink/jetsink:local):
// that is what the kubelet resolves a pod's `image: jetsink/jetsink:local`
// to and looks up in containerd.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/jetsink/jetsink/internal/reporoot"
)

const (
	// DefaultProductRef is the product image's reference: the operator's
	// own pod and, through --worker-image, the sinks' worker pods run it.
	DefaultProductRef = "jetsink/jetsink:local"
	// DefaultPauseRef is the sandbox image; the cluster's containerd must
	// name it as sandbox_image.
	DefaultPauseRef = "jetsink/pause:local"
	// HostCACerts is the host's CA bundle, copied into the product image
	// to the same path (the binaries' TLS to S3 and NATS reads it there).
	HostCACerts = "/etc/ssl/certs/ca-certificates.crt"
)

// The product image's config: the Dockerfile's final stage.
var (
	productEnv        = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	productUser       = "65532:65532"
	productEntrypoint = []string{"manager"}
)

// Users and groups as distroless has them. Their homes do not exist:
// neither binary reads HOME.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
)

// epoch is every timestamp in the images (config, history, tar entries):
// the time of the build would make identical binaries a different image.
var epoch = time.Unix(0, 0).UTC()

// ProductOptions says what goes into the product image.
type ProductOptions struct {
	// Manager, Worker and TableWorker are the host paths of the static
	// manager, sinkworker and sinkworker-iceberg binaries (make build puts
	// them in bin/).
	Manager, Worker, TableWorker string
	// CACerts is the CA bundle to install; empty means HostCACerts if the
	// host has it, else none. A bundle named here must exist.
	CACerts string
	// Ref is the image's reference; empty means DefaultProductRef.
	Ref string
}

// PauseOptions says where the pause image's binary comes from.
type PauseOptions struct {
	// Binary is a prebuilt pause binary. Empty means compile
	// hack/image/pause into BuildDir (see BuildPauseBinary).
	Binary   string
	BuildDir string
	// Ref is the image's reference; empty means DefaultPauseRef.
	Ref string
}

// Image is an image and the fully qualified reference Write names it by.
type Image struct {
	Ref   name.Tag
	Image v1.Image
}

// Written is what Write put into an archive for one image.
type Written struct {
	Ref string // fully qualified, as in the archive's manifest.json
	// ID is the digest of the image's config: the IMAGE ID that crictl and
	// the kubelet show, and which an import keeps.
	ID v1.Hash
	// Digest is the image manifest's digest. ctr import of a docker
	// archive writes a manifest of its own, so the digest containerd
	// reports for the image differs from this one; compare IDs.
	Digest v1.Hash
}

func (w Written) String() string { return fmt.Sprintf("%s id %s digest %s", w.Ref, w.ID, w.Digest) }

// Build makes the product and pause images and writes both into one
// docker archive at archive.
func Build(ctx context.Context, archive string, product ProductOptions, pause PauseOptions) ([]Written, error) {
	p, err := Product(product)
	if err != nil {
		return nil, err
	}
	s, err := Pause(ctx, pause)
	if err != nil {
		return nil, err
	}
	return Write(archive, p, s)
}

// Product makes the product image: manager, sinkworker and
// sinkworker-iceberg in /usr/local/bin, as the Dockerfile has them.
func Product(o ProductOptions) (Image, error) {
	if o.Manager == "" || o.Worker == "" || o.TableWorker == "" {
		return Image{}, errors.New("product image: the manager, sinkworker and sinkworker-iceberg binaries are all needed")
	}
	ref, err := qualify(o.Ref, DefaultProductRef)
	if err != nil {
		return Image{}, err
	}
	for _, bin := range []string{o.Manager, o.Worker, o.TableWorker} {
		if err := static(bin); err != nil {
			return Image{}, fmt.Errorf("product image: %w", err)
		}
	}
	files := []file{
		{name: "usr/local/bin/manager", mode: 0o755, src: o.Manager},
		{name: "usr/local/bin/sinkworker", mode: 0o755, src: o.Worker},
		{name: "usr/local/bin/sinkworker-iceberg", mode: 0o755, src: o.TableWorker},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		// Sticky and world-writable as in distroless, so that os.TempDir
		// works for 65532 (neither binary writes temporary files today).
		{name: "tmp", mode: 0o1777, dir: true},
	}
	ca := o.CACerts
	if ca == "" {
		ca = HostCACerts
		if _, err := os.Stat(ca); errors.Is(err, os.ErrNotExist) {
			ca = ""
		}
	}
	if ca != "" {
		files = append(files, file{name: strings.TrimPrefix(HostCACerts, "/"), mode: 0o644, src: ca})
	}
	img, err := singleLayer(files, v1.Config{Env: productEnv, User: productUser, Entrypoint: productEntrypoint})
	if err != nil {
		return Image{}, fmt.Errorf("product image: %w", err)
	}
	return Image{Ref: ref, Image: img}, nil
}

// Pause makes the sandbox image: the pause binary as /pause, run as 65535
// like the upstream pause image.
func Pause(ctx context.Context, o PauseOptions) (Image, error) {
	ref, err := qualify(o.Ref, DefaultPauseRef)
	if err != nil {
		return Image{}, err
	}
	bin := o.Binary
	if bin == "" {
		if bin, err = BuildPauseBinary(ctx, o.BuildDir); err != nil {
			return Image{}, err
		}
	}
	img, err := singleLayer([]file{{name: "pause", mode: 0o755, src: bin}},
		v1.Config{User: "65535:65535", Entrypoint: []string{"/pause"}})
	if err != nil {
		return Image{}, fmt.Errorf("pause image: %w", err)
	}
	return Image{Ref: ref, Image: img}, nil
}

// BuildPauseBinary compiles hack/image/pause, static and reproducible like
// the Dockerfile's binaries, to <outDir>/pause and returns its path.
func BuildPauseBinary(ctx context.Context, outDir string) (string, error) {
	if outDir == "" {
		return "", errors.New("build pause: no output directory")
	}
	root, err := reporoot.Find()
	if err != nil {
		return "", err
	}
	// go build runs in the repository root: make the output independent of it.
	out, err := filepath.Abs(filepath.Join(outDir, "pause"))
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./hack/image/pause")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build pause: %w\n%s", err, b)
	}
	return out, nil
}

// Write writes the images into one docker archive at path, the format
// `ctr images import` reads with every image's name. The archive appears
// whole or not at all.
func Write(path string, images ...Image) ([]Written, error) {
	refs := make(map[name.Reference]v1.Image, len(images))
	written := make([]Written, 0, len(images))
	for _, im := range images {
		if _, dup := refs[im.Ref]; dup {
			return nil, fmt.Errorf("%s: named twice", im.Ref)
		}
		refs[im.Ref] = im.Image
		id, err := im.Image.ConfigName()
		if err != nil {
			return nil, err
		}
		digest, err := im.Image.Digest()
		if err != nil {
			return nil, err
		}
		written = append(written, Written{Ref: im.Ref.String(), ID: id, Digest: digest})
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".images-*.tar")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	// CreateTemp's 0600 would hide the archive from a ctr of another user.
	err = tmp.Chmod(0o644)
	if err == nil {
		err = tarball.MultiRefWrite(refs, tmp)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return written, nil
}

// Import imports every image of the archive at tarPath into containerd's
// k8s.io namespace, where the kubelet's CRI finds them, with
// `ctr --address <address> -n k8s.io images import --all-platforms`.
// --all-platforms imports the archive as it is rather than only what matches
// ctr's own platform; ctr unpacks into the default snapshotter.
func Import(ctx context.Context, ctrBinary, address, tarPath string) error {
	cmd := exec.CommandContext(ctx, ctrBinary, "--address", address, "-n", "k8s.io",
		"images", "import", "--all-platforms", tarPath)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, b)
	}
	return nil
}

// qualify parses ref (def if empty), which must have a tag, into the fully
// qualified reference containerd and the kubelet use. They spell Docker Hub
// docker.io; go-containerregistry spells it index.docker.io.
func qualify(ref, def string) (name.Tag, error) {
	if ref == "" {
		ref = def
	}
	t, err := name.NewTag(ref)
	if err == nil && !strings.HasSuffix(ref, ":"+t.TagStr()) {
		err = errors.New("no tag") // not :latest, which the kubelet would pull
	}
	if err != nil {
		return name.Tag{}, fmt.Errorf("image reference %q: %w", ref, err)
	}
	reg := t.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return name.NewTag(reg + "/" + t.RepositoryStr() + ":" + t.TagStr())
}

// file is an entry of an image's layer: a directory, bytes, or a host file.
type file struct {
	name string // without a leading slash
	mode int64
	dir  bool
	data []byte
	src  string // host file to copy when data is nil
}

// singleLayer makes a linux image of runtime.GOARCH (the binaries are the
// host's) from scratch with one layer holding files, and cfg.
func singleLayer(files []file, cfg v1.Config) (v1.Image, error) {
	b, err := tarLayer(files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithCompressedCaching) // gzip once, not for the digest and again for the archive
	if err != nil {
		return nil, err
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: epoch},
		Config:       cfg,
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	return mutate.Append(img, mutate.Addendum{Layer: layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "hack/image"}})
}

// tarLayer writes files and their parent directories (0755), sorted by name
// (a directory before its contents), owned by root, at the epoch.
func tarLayer(files []file) ([]byte, error) {
	byName := map[string]file{}
	for _, f := range files {
		byName[f.name] = f
		for d := path.Dir(f.name); d != "."; d = path.Dir(d) {
			if _, ok := byName[d]; !ok {
				byName[d] = file{name: d, mode: 0o755, dir: true}
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		f := byName[n]
		hdr := &tar.Header{Name: n, Mode: f.mode, ModTime: epoch, Typeflag: tar.TypeReg}
		if f.dir {
			hdr.Typeflag = tar.TypeDir
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, err
			}
			continue
		}
		data := f.data
		if data == nil {
			var err error
			if data, err = os.ReadFile(f.src); err != nil {
				return nil, err
			}
		}
		hdr.Size = int64(len(data))
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// static refuses a dynamically linked executable: the image has no libc,
// and its container would fail with a bare "no such file or directory".
// Anything that is not a readable ELF file (the tests' stand-ins) passes.
func static(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(b, []byte(elf.ELFMAG)) {
		return nil
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil // not an executable we can read; the container will say
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked: build it with CGO_ENABLED=0 (make build does)", path)
		}
	}
	return nil
}
