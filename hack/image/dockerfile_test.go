package image

import (
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jetsink/jetsink/internal/reporoot"
)

// TestDockerfileAgrees reads the final stage of the repository's Dockerfile
// and checks that the product image is configured as it is, so that the
// local cluster runs what a release runs.
func TestDockerfileAgrees(t *testing.T) {
	root, err := reporoot.Find()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	final := finalStage(string(b))
	if len(final) == 0 || !strings.HasPrefix(strings.ToUpper(final[0]), "FROM ") {
		t.Fatalf("no FROM in the Dockerfile: %q", final)
	}

	dir := t.TempDir()
	o, _ := fakeBinaries(t, dir)
	archive, w := writeProduct(t, dir, o)
	img := readBack(t, archive, w.Ref)
	cfg := configFile(t, img).Config
	files := layerEntries(t, img)

	var env []string
	for _, in := range final {
		op, args, _ := strings.Cut(in, " ")
		switch strings.ToUpper(op) {
		case "FROM":
			// The layer stands in for distroless static (CA bundle,
			// passwd, group, /tmp); another base needs another stand-in.
			if !strings.Contains(args, "distroless/static") {
				t.Errorf("the final stage is %q: hack/image stands in for distroless static only", in)
			}
		case "COPY":
			// COPY [--from=…] <sources…> <dir>/: each source lands by its base name.
			var srcs []string
			for _, f := range strings.Fields(args) {
				if !strings.HasPrefix(f, "--") {
					srcs = append(srcs, f)
				}
			}
			if len(srcs) < 2 || !strings.HasSuffix(srcs[len(srcs)-1], "/") {
				t.Errorf("cannot read %q (want COPY <files> <dir>/)", in)
				continue
			}
			dst := strings.TrimPrefix(srcs[len(srcs)-1], "/")
			for _, s := range srcs[:len(srcs)-1] {
				if n := path.Join(dst, path.Base(s)); files[n].hdr == nil {
					t.Errorf("%q copies %s, which the image has not", in, n)
				}
			}
		case "ENV":
			// Only the ENV k=v [k=v…] form, without quotes.
			for _, kv := range strings.Fields(args) {
				if !strings.Contains(kv, "=") || strings.ContainsAny(kv, `"'`) {
					t.Errorf("cannot read %q (want ENV k=v …)", in)
				}
				env = append(env, kv)
			}
		case "USER":
			if cfg.User != args {
				t.Errorf("Dockerfile has USER %s, the image %q", args, cfg.User)
			}
		case "ENTRYPOINT":
			var ep []string
			if err := json.Unmarshal([]byte(args), &ep); err != nil {
				t.Errorf("cannot read %q (want the exec form): %v", in, err)
			}
			if !slices.Equal(ep, cfg.Entrypoint) {
				t.Errorf("Dockerfile has ENTRYPOINT %q, the image %q", ep, cfg.Entrypoint)
			}
		default:
			t.Errorf("the final stage has %q, which hack/image does not mirror", in)
		}
	}
	slices.Sort(env)
	got := slices.Sorted(slices.Values(cfg.Env))
	if !slices.Equal(env, got) {
		t.Errorf("Dockerfile's ENV %q, the image's %q", env, got)
	}
}

// finalStage returns the instructions of the Dockerfile's last stage, from
// its FROM on, with continuation lines joined and comments dropped.
func finalStage(dockerfile string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(dockerfile, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if more, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(more)
			continue
		}
		cur.WriteString(line)
		in := strings.Join(strings.Fields(cur.String()), " ")
		cur.Reset()
		if strings.HasPrefix(strings.ToUpper(in), "FROM ") {
			out = out[:0]
		}
		out = append(out, in)
	}
	return out
}
