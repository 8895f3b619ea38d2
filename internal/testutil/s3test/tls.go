package s3test

import (
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/jetsink/jetsink/internal/testutil/tlstest"
)

// StartTLS runs versitygw like Start, serving HTTPS only, with a
// certificate for 127.0.0.1 from a new CA no system trusts. The CA's PEM is
// returned: what a client must be given. URL is https://…, and the
// server's own helpers (Client, CreateBucket, List, Get) trust it.
func StartTLS(t testing.TB) (s *Server, caPEM []byte) {
	t.Helper()
	pki := tlstest.NewPKI(t)
	dir := t.TempDir()
	files := [2]string{filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")}
	if err := os.WriteFile(files[0], pki.ServerCertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files[1], pki.ServerKeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s = start(t, &files)
	s.client = s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.URL),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		HTTPClient: &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pki.Pool(), MinVersion: tls.VersionTLS12},
		}},
	})
	return s, pki.CAPEM
}
