package s3test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// StartWithUsers runs versitygw like Start, with its internal IAM (accounts
// kept in a file in the test's temp dir), so the test can add accounts
// besides root with CreateUser and grant them actions with PutBucketPolicy.
//
// versitygw reads the IAM directory from VGW_IAM_DIR, which its process
// inherits; the variable is set for the rest of the test, so a test that
// calls this cannot be parallel.
func StartWithUsers(t testing.TB) *Server {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "iam")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VGW_IAM_DIR", dir)
	return Start(t)
}

// CreateUser adds an account with role "user": it owns no bucket, so it may
// do only what a bucket policy (or ACL) grants it. The server must have been
// started by StartWithUsers.
//
// It sends what `versitygw admin create-user` sends: the account as XML in a
// PATCH /create-user signed by root, which the gateway serves on its S3 port
// when it has no --admin-port.
func (s *Server) CreateUser(t testing.TB, access, secret string) {
	t.Helper()
	// Element names are the Go field names of versitygw's auth.Account,
	// which has no xml tags.
	body, err := xml.Marshal(struct {
		XMLName xml.Name `xml:"Account"`
		Access  string
		Secret  string
		Role    string
	}{Access: access, Secret: secret, Role: "user"})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx(t), http.MethodPatch, s.URL+"/create-user", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	payload := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", payload)
	creds := aws.Credentials{AccessKeyID: AccessKey, SecretAccessKey: SecretKey}
	if err := v4.NewSigner().SignHTTP(req.Context(), creds, req, payload, "s3", Region, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("s3test: create user %s: %v", access, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("s3test: create user %s: %s\n%s\n(was the server started by StartWithUsers?)", access, resp.Status, msg)
	}
}

// PutBucketPolicy sets a bucket's policy, as root. versitygw checks that
// every principal it names exists: create the users first. With the
// internal IAM a principal is an access key ID, e.g. {"AWS": ["writer"]}.
func (s *Server) PutBucketPolicy(t testing.TB, bucket, policyJSON string) {
	t.Helper()
	if _, err := s.client.PutBucketPolicy(ctx(t), &s3.PutBucketPolicyInput{
		Bucket: &bucket, Policy: &policyJSON,
	}); err != nil {
		t.Fatalf("s3test: put policy of bucket %s: %v", bucket, err)
	}
}

// ClientAs is an S3 client for this server with an account's keys.
func (s *Server) ClientAs(access, secret string) *s3.Client {
	return s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.URL),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(access, secret, ""),
		Retryer:      aws.NopRetryer{},
	})
}
