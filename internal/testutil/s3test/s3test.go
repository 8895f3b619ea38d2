// Package s3test runs a real S3 server for tests: versitygw with its posix
// backend (objects are plain files in the test's temp dir) on a free
// loopback port, stopped when the test ends. Only tests import it.
//
// The binary is built by `./hack/tools/install.sh versitygw` (which `make
// test` runs first) into <repo root>/bin/versitygw; JETSINK_VERSITYGW
// overrides the path. A missing binary fails the test rather than skipping
// it, so CI can never pass without exercising S3.
package s3test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/jetsink/jetsink/internal/reporoot"
)

// Credentials of the gateway's root account.
const (
	AccessKey = "jetsink-test"
	SecretKey = "jetsink-test-secret"
	Region    = "us-east-1"
)

// Server is a running versitygw.
type Server struct {
	// URL is the endpoint, e.g. http://127.0.0.1:40123 (path-style only).
	URL string
	// Dir is the posix backend's root: one directory per bucket.
	Dir string

	client *s3.Client
}

// Binary returns the versitygw binary's path, failing the test with what to
// run when it is missing.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("JETSINK_VERSITYGW"); p != "" {
		return p
	}
	root, err := reporoot.Find()
	if err != nil {
		t.Fatalf("s3test: %v", err)
	}
	p := filepath.Join(root, "bin", "versitygw")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("s3test: versitygw not found at %s: run `make test` or `./hack/tools/install.sh versitygw` first (or set JETSINK_VERSITYGW)", p)
	}
	return p
}

// Start runs versitygw until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, nil)
}

// start runs versitygw, over TLS when tlsFiles names a certificate and
// its key.
func start(t testing.TB, tlsFiles *[2]string) *Server {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	var logs bytes.Buffer
	args := []string{"--access", AccessKey, "--secret", SecretKey, "--region", Region, "--port", addr, "--quiet"}
	scheme := "http://"
	if tlsFiles != nil {
		args = append(args, "--cert", tlsFiles[0], "--key", tlsFiles[1])
		scheme = "https://"
	}
	cmd := exec.Command(bin, append(args, "posix", root)...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("s3test: start versitygw: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("s3test: versitygw exited: %v\n%s", err, logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("s3test: versitygw did not listen on %s\n%s", addr, logs.String())
		}
	}
	s := &Server{URL: scheme + addr, Dir: root}
	s.client = NewClient(s.URL)
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// NewClient returns an S3 client for endpoint with the root credentials.
func NewClient(endpoint string) *s3.Client {
	return s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
	})
}

// Client is an S3 client for this server.
func (s *Server) Client() *s3.Client { return s.client }

// SetEnv points the AWS SDK's default credential chain at this server's
// root account for the rest of the test (for code that, like the worker,
// loads its credentials from the environment).
func (s *Server) SetEnv(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", SecretKey)
	t.Setenv("AWS_REGION", Region)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// Env returns the same variables as SetEnv, for a child process.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + AccessKey, "AWS_SECRET_ACCESS_KEY=" + SecretKey,
		"AWS_REGION=" + Region, "AWS_EC2_METADATA_DISABLED=true",
	}
}

// CreateBucket creates a bucket.
func (s *Server) CreateBucket(t testing.TB, bucket string) {
	t.Helper()
	if _, err := s.client.CreateBucket(ctx(t), &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatalf("s3test: create bucket %s: %v", bucket, err)
	}
}

// List returns every key under prefix, in order.
func (s *Server) List(t testing.TB, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx(t))
		if err != nil {
			t.Fatalf("s3test: list s3://%s/%s: %v", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// Get returns an object's body.
func (s *Server) Get(t testing.TB, bucket, key string) []byte {
	t.Helper()
	out, err := s.client.GetObject(ctx(t), &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		t.Fatalf("s3test: get s3://%s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("s3test: read s3://%s/%s: %v", bucket, key, err)
	}
	return b
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// String describes the server for test logs.
func (s *Server) String() string { return fmt.Sprintf("versitygw at %s (dir %s)", s.URL, s.Dir) }

// RepoRoot is reporoot.Find, for callers of this package.
func RepoRoot() (string, error) { return reporoot.Find() }
