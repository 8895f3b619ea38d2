package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// allowedImagesUsage documents --allowed-worker-images exactly; the chart's
// workerImagePolicy.allowed renders into it.
const allowedImagesUsage = "Images a WarehouseSink may name in spec.image, as comma-separated path.Match patterns " +
	"matched against the whole reference (registry.example.com/jetsink/*: a '*' matches within one path segment, " +
	"tag and digest included, never a '/'). Unset or \"*\" allows any image; \"none\" allows no override, so every sink " +
	"runs --worker-image. A sink naming another image is Stalled (ImageNotAllowed); sinks without spec.image are never affected."

// parseAllowedImages reads --allowed-worker-images into the reconciler's
// AllowedImages: nil allows any image, an empty non-nil list none.
func parseAllowedImages(s string) ([]string, error) {
	switch strings.TrimSpace(s) {
	case "", "*":
		return nil, nil
	case "none":
		return []string{}, nil
	}
	var patterns []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		switch p {
		case "":
			continue
		case "*", "none":
			// In a list "*" would match only images without a '/', and
			// "none" an image called none: refuse rather than surprise.
			return nil, fmt.Errorf("%q is a value of its own (any image, no override), not a pattern in a list", p)
		}
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("pattern %q: %w", p, err)
		}
		patterns = append(patterns, p)
	}
	if len(patterns) == 0 {
		return nil, errors.New(`no pattern: leave it unset (or "*") for any image, "none" for no override`)
	}
	return patterns, nil
}

// splitList reads a comma-separated flag, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// metricsOptions serve /metrics as the kubebuilder v4 scaffold does. Secure:
// HTTPS, and only to callers whose bearer token the API server accepts
// (TokenReview) and who may GET the non-resource URL /metrics
// (SubjectAccessReview), so the manager needs to create both reviews. The
// certificate is tls.crt and tls.key in certDir, reloaded when they change,
// or else one generated at start (self-signed: scrapers skip verification).
// Not secure: plain HTTP to anyone, for a manager run on a workstation.
func metricsOptions(addr string, secure bool, certDir string, enableHTTP2 bool) (metricsserver.Options, error) {
	opts := metricsserver.Options{BindAddress: addr}
	if !secure {
		if certDir != "" {
			return opts, errors.New("--metrics-cert-path needs --metrics-secure")
		}
		return opts, nil
	}
	opts.SecureServing = true
	opts.FilterProvider = filters.WithAuthenticationAndAuthorization
	if !enableHTTP2 {
		// HTTP/2 stream cancellation and rapid reset (CVE-2023-44487,
		// CVE-2023-39325) are cheap denial of service; Prometheus speaks
		// HTTP/1.1 anyway.
		opts.TLSOpts = append(opts.TLSOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	if certDir != "" {
		// controller-runtime silently falls back to a self-signed
		// certificate when the files are missing: a mount that did not
		// happen must fail the start instead.
		for _, f := range []string{"tls.crt", "tls.key"} {
			if _, err := os.Stat(filepath.Join(certDir, f)); err != nil {
				return opts, fmt.Errorf("--metrics-cert-path: %w", err)
			}
		}
		opts.CertDir = certDir
	}
	return opts, nil
}

// describeAllowed says in the start-up log what the image policy allows.
func describeAllowed(patterns []string) string {
	switch {
	case patterns == nil:
		return "any"
	case len(patterns) == 0:
		return "none"
	}
	return strings.Join(patterns, ",")
}
