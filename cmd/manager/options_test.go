package main

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestParseAllowedImages: --allowed-worker-images as its usage documents
// it. nil (any image) and an empty list (no override) mean opposite things
// to the reconciler, so each spelling is pinned.
func TestParseAllowedImages(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string // nil: any image
		none    bool     // want an empty, non-nil list
		wantErr bool
	}{
		{in: ""},
		{in: "*"},
		{in: " * "},
		{in: "none", none: true},
		{in: "registry.example.com/jetsink/*", want: []string{"registry.example.com/jetsink/*"}},
		{in: "registry.example.com/jetsink/*, ghcr.io/acme/sinkworker:*,", want: []string{"registry.example.com/jetsink/*", "ghcr.io/acme/sinkworker:*"}},
		{in: "*,registry.example.com/jetsink/*", wantErr: true}, // "*" in a list matches only images without a '/'
		{in: "none,registry.example.com/jetsink/*", wantErr: true},
		{in: "registry.example.com/[", wantErr: true},
		{in: ",", wantErr: true},
	} {
		got, err := parseAllowedImages(tc.in)
		switch {
		case tc.wantErr:
			if err == nil {
				t.Errorf("%q: %v, want an error", tc.in, got)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.none:
			if got == nil || len(got) != 0 {
				t.Errorf("%q: %#v, want an empty non-nil list (no override)", tc.in, got)
			}
		case tc.want == nil:
			if got != nil {
				t.Errorf("%q: %#v, want nil (any image)", tc.in, got)
			}
		case !slices.Equal(got, tc.want):
			t.Errorf("%q: %#v, want %#v", tc.in, got, tc.want)
		}
	}
}

// TestMetricsOptions: secure metrics are HTTPS behind the API server's
// authentication and authorization, HTTP/1.1 unless asked, with a
// certificate directory only when it holds a certificate.
func TestMetricsOptions(t *testing.T) {
	o, err := metricsOptions(":8443", true, "", false)
	if err != nil || !o.SecureServing || o.FilterProvider == nil || o.BindAddress != ":8443" || o.CertDir != "" {
		t.Fatalf("secure: %+v %v", o, err)
	}
	cfg := &tls.Config{NextProtos: []string{"h2"}}
	for _, f := range o.TLSOpts {
		f(cfg)
	}
	if !slices.Equal(cfg.NextProtos, []string{"http/1.1"}) {
		t.Errorf("NextProtos %v: HTTP/2 is on without --enable-http2", cfg.NextProtos)
	}
	if o, _ := metricsOptions(":8443", true, "", true); len(o.TLSOpts) != 0 {
		t.Error("--enable-http2 still restricts the protocols")
	}

	o, err = metricsOptions(":8080", false, "", false)
	if err != nil || o.SecureServing || o.FilterProvider != nil {
		t.Errorf("--metrics-secure=false: %+v %v, want plain HTTP without a filter", o, err)
	}
	if _, err := metricsOptions(":8080", false, t.TempDir(), false); err == nil {
		t.Error("--metrics-cert-path with plain HTTP was accepted")
	}

	dir := t.TempDir()
	if _, err := metricsOptions(":8443", true, dir, false); err == nil {
		t.Error("--metrics-cert-path without tls.crt and tls.key was accepted: controller-runtime would silently self-sign")
	}
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if o, err := metricsOptions(":8443", true, dir, false); err != nil || o.CertDir != dir {
		t.Errorf("with a certificate: %+v %v", o, err)
	}
}

func TestSplitList(t *testing.T) {
	if got := splitList(" analytics, ,staging,"); !slices.Equal(got, []string{"analytics", "staging"}) {
		t.Errorf("splitList: %q", got)
	}
	if got := splitList(""); got != nil {
		t.Errorf("splitList(\"\"): %q, want nil (every namespace)", got)
	}
}
