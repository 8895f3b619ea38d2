package controllers

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/internal/testutil/s3test"
	"github.com/jetsink/jetsink/sinkworker/config"
)

const markerKey = "events/" + accessCheckKey

func destinationConfig(endpoint, bucket string) config.Config {
	cfg := config.Default()
	cfg.Bucket, cfg.Prefix = bucket, "events/"
	cfg.Endpoint, cfg.ForcePathStyle, cfg.Region = endpoint, true, s3test.Region
	return cfg
}

func s3Secret(access, secret string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "s3-creds"},
		Data:       map[string][]byte{"AWS_ACCESS_KEY_ID": []byte(access), "AWS_SECRET_ACCESS_KEY": []byte(secret)},
	}
}

// The check asks for what the workers use and no more: a user allowed only
// s3:PutObject and s3:GetObject on the prefix passes, and each missing
// action is named.
func TestDestinationCheckNeedsOnlyWhatWorkersDo(t *testing.T) {
	srv := s3test.StartWithUsers(t)
	srv.CreateBucket(t, "lake")
	for _, u := range []string{"putget", "getonly", "putonly"} {
		srv.CreateUser(t, u, u+"-secret")
	}
	srv.PutBucketPolicy(t, "lake", `{
	  "Version": "2012-10-17",
	  "Statement": [
	    {"Effect": "Allow", "Principal": {"AWS": ["putget"]}, "Action": ["s3:PutObject", "s3:GetObject"], "Resource": "arn:aws:s3:::lake/events/*"},
	    {"Effect": "Allow", "Principal": {"AWS": ["getonly"]}, "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::lake/events/*"},
	    {"Effect": "Allow", "Principal": {"AWS": ["putonly"]}, "Action": ["s3:PutObject"], "Resource": "arn:aws:s3:::lake/events/*"}
	  ]
	}`)
	// The policy is what it claims: without s3:ListBucket, the HeadBucket
	// the check used to do is refused.
	_, err := srv.ClientAs("putget", "putget-secret").HeadBucket(t.Context(), &s3.HeadBucketInput{Bucket: aws.String("lake")})
	if status := httpStatus(err); status != 403 {
		t.Fatalf("HeadBucket as putget: want 403, got %d (%v)", status, err)
	}

	cases := []struct {
		name           string
		access, secret string
		bucket         string
		reason         string // "" for no problem
		stalled        bool
		want           []string // in the message
	}{
		{name: "root", access: s3test.AccessKey, secret: s3test.SecretKey, bucket: "lake"},
		{name: "only PutObject and GetObject on the prefix", access: "putget", secret: "putget-secret", bucket: "lake"},
		{
			name: "no PutObject", access: "getonly", secret: "getonly-secret", bucket: "lake",
			reason: jetsinkv1.ReasonS3AccessDenied, stalled: true,
			want: []string{"denied s3:PutObject on s3://lake/" + markerKey, `Secret "s3-creds"`, `"getonly"`, "arn:aws:s3:::lake/events/*"},
		},
		{
			name: "no GetObject", access: "putonly", secret: "putonly-secret", bucket: "lake",
			reason: jetsinkv1.ReasonS3AccessDenied, stalled: true,
			want: []string{"denied s3:GetObject on s3://lake/" + markerKey, `Secret "s3-creds"`, `"putonly"`, "arn:aws:s3:::lake/events/*"},
		},
		{
			name: "wrong secret key", access: s3test.AccessKey, secret: "not-the-secret", bucket: "lake",
			reason: jetsinkv1.ReasonS3AccessDenied, stalled: true,
			want: []string{"denied s3:PutObject", `Secret "s3-creds"`, "AWS_SECRET_ACCESS_KEY is not the secret of AWS_ACCESS_KEY_ID"},
		},
		{
			name: "unknown access key", access: "nobody", secret: "nobody-secret", bucket: "lake",
			reason: jetsinkv1.ReasonS3AccessDenied, stalled: true,
			want: []string{"denied s3:PutObject", "S3 does not know AWS_ACCESS_KEY_ID"},
		},
		{
			name: "missing bucket", access: s3test.AccessKey, secret: s3test.SecretKey, bucket: "no-such-bucket",
			reason: jetsinkv1.ReasonBucketNotFound, stalled: true,
			want: []string{`bucket "no-such-bucket" (destination.bucket) does not exist`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Twice: the first check finds no marker and writes it (when it
			// may), the second gets the 412 of If-None-Match.
			if _, err := srv.Client().DeleteObject(t.Context(), &s3.DeleteObjectInput{
				Bucket: aws.String("lake"), Key: aws.String(markerKey),
			}); err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				p := checkDestination(t.Context(), destinationConfig(srv.URL, tc.bucket), s3Secret(tc.access, tc.secret))
				if tc.reason == "" {
					if p != nil {
						t.Fatalf("check %d: want no problem, got %v", i+1, p)
					}
					continue
				}
				if p == nil {
					t.Fatalf("check %d: want %s, got no problem", i+1, tc.reason)
				}
				t.Logf("check %d: %s", i+1, p.Message)
				if p.Reason != tc.reason || p.stalled != tc.stalled {
					t.Errorf("check %d: want %s (stalled %t), got %s (stalled %t): %s", i+1, tc.reason, tc.stalled, p.Reason, p.stalled, p.Message)
				}
				for _, w := range tc.want {
					if !strings.Contains(p.Message, w) {
						t.Errorf("check %d: message lacks %q: %s", i+1, w, p.Message)
					}
				}
				if strings.Contains(p.Message, tc.secret) {
					t.Errorf("check %d: message shows the secret key: %s", i+1, p.Message)
				}
			}
			if tc.reason == "" {
				// Nothing but the marker was written, and under the prefix.
				if keys := srv.List(t, "lake", ""); len(keys) != 1 || keys[0] != markerKey {
					t.Errorf("bucket holds %q, want only %s", keys, markerKey)
				}
				if got := srv.Get(t, "lake", markerKey); !bytes.Equal(got, accessCheckBody) {
					t.Errorf("marker holds %q", got)
				}
			}
		})
	}
}

// A store that is not there, or does not answer, is a retrying problem
// reported within the check's bound, not a stalled reconcile queue.
func TestDestinationUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	// Accepts and never answers; its connections close with it.
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()

	cases := []struct {
		name     string
		endpoint string
		within   time.Duration
		want     string
	}{
		{"closed port", "http://" + closed, time.Second, "connection refused"},
		{"no answer", "http://" + silent.Addr().String(), destinationTimeout + time.Second, "did not answer s3:PutObject"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			p := checkDestination(t.Context(), destinationConfig(tc.endpoint, "lake"), s3Secret(s3test.AccessKey, s3test.SecretKey))
			took := time.Since(start)
			if p == nil {
				t.Fatal("want S3Unreachable, got no problem")
			}
			t.Logf("%s after %s", p.Message, took)
			if p.Reason != jetsinkv1.ReasonS3Unreachable || p.stalled {
				t.Errorf("want %s, retrying; got %s (stalled %t): %s", jetsinkv1.ReasonS3Unreachable, p.Reason, p.stalled, p.Message)
			}
			if !strings.Contains(p.Message, tc.want) || !strings.Contains(p.Message, tc.endpoint) {
				t.Errorf("message lacks %q or the endpoint: %s", tc.want, p.Message)
			}
			if took > tc.within {
				t.Errorf("check took %s, want at most %s", took, tc.within)
			}
		})
	}
}

func httpStatus(err error) int {
	var resp *awshttp.ResponseError
	if errors.As(err, &resp) {
		return resp.HTTPStatusCode()
	}
	return 0
}
