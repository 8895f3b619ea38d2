package controllers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	corev1 "k8s.io/api/core/v1"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// destinationTimeout bounds the whole check, PUT and HEAD: the reconcile
// queue is shared by every sink, and one tenant's dead S3 must not hold it.
const destinationTimeout = 3 * time.Second

// accessCheckKey is the marker object's name under the sink's prefix. Query
// engines skip names starting with "_" (Athena, Spark, Hive, Trino) and
// DuckDB globs on *.parquet, so it never shows up in a table.
const accessCheckKey = "_jetsink/access-check"

// accessCheckBody is the marker's content, for whoever finds it.
var accessCheckBody = []byte("Written by the jetsink operator to check that a WarehouseSink's S3 credentials\n" +
	"can do what its workers do: s3:PutObject, and s3:GetObject (HeadObject) on what\n" +
	"they wrote. Data readers skip names starting with \"_\". Safe to delete; it\n" +
	"comes back at the next check.\n")

// checkDestination does, with the credentials of the sink's S3 Secret, what
// a worker does with a file: a PutObject that never overwrites (If-None-Match)
// then, as after a 412, a HeadObject. It uses nothing the workers do not
// need (no s3:ListBucket, which HeadBucket would take), so a least-privilege
// policy passes, and wrong keys, a missing permission or a misspelt bucket
// show on the sink instead of only as failed uploads in the workers' logs.
// Without a Secret the workers use their pod's identity, which the operator
// does not have, so there is nothing it can check.
func checkDestination(ctx context.Context, cfg config.Config, secret *corev1.Secret) *problem {
	if secret == nil {
		return nil
	}
	accessKey := string(secret.Data["AWS_ACCESS_KEY_ID"])
	tlsConfig, err := cfg.S3TLSConfig()
	if err != nil {
		return stalled(jetsinkv1.ReasonInvalidSpec, "destination.tls.secretRef: %v", err)
	}
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = destinationTimeout }).
		WithTransportOptions(func(t *http.Transport) {
			t.TLSHandshakeTimeout = destinationTimeout
			// A client per check: a kept-alive connection would outlive
			// it, one per sink and recheck, until the server drops it.
			t.DisableKeepAlives = true
			if tlsConfig != nil {
				t.TLSClientConfig = tlsConfig
			}
		})
	client := s3.New(s3.Options{
		Region:       cfg.Region,
		UsePathStyle: cfg.ForcePathStyle,
		Credentials: credentials.NewStaticCredentialsProvider(
			accessKey, string(secret.Data["AWS_SECRET_ACCESS_KEY"]), string(secret.Data["AWS_SESSION_TOKEN"])),
		BaseEndpoint: optional(cfg.Endpoint),
		HTTPClient:   httpClient,
		Retryer:      aws.NopRetryer{},
	})
	ctx, cancel := context.WithTimeout(ctx, destinationTimeout)
	defer cancel()

	key := cfg.Prefix + accessCheckKey
	d := denial{cfg: cfg, secret: secret.Name, accessKey: accessKey, key: key}
	_, err = client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(cfg.Bucket),
		Key:           aws.String(key),
		Body:          bytes.NewReader(accessCheckBody),
		ContentLength: aws.Int64(int64(len(accessCheckBody))),
		ContentType:   aws.String("text/plain; charset=utf-8"),
		// As the workers do. The marker of an earlier check answers 412,
		// which S3 sends only once it has authorized the PUT.
		IfNoneMatch: aws.String("*"),
	})
	if err != nil && !isPreconditionFailed(err) {
		return d.classify("s3:PutObject", err)
	}
	_, err = client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(cfg.Bucket), Key: aws.String(key)})
	if err != nil {
		return d.classify("s3:GetObject", err)
	}
	return nil
}

// denial turns a failed request of the check into the sink's problem.
type denial struct {
	cfg       config.Config
	secret    string
	accessKey string
	key       string
}

func (d denial) classify(action string, err error) *problem {
	where := "S3"
	if d.cfg.Endpoint != "" {
		where = d.cfg.Endpoint
	}
	object := fmt.Sprintf("s3://%s/%s", d.cfg.Bucket, d.key)
	status, code, msg := 0, "", ""
	var resp *awshttp.ResponseError
	if errors.As(err, &resp) {
		status = resp.HTTPStatusCode()
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code, msg = ae.ErrorCode(), ae.ErrorMessage()
	}
	said := code
	if msg != "" && msg != code {
		said += ": " + msg
	}

	switch {
	case status == http.StatusForbidden || status == http.StatusUnauthorized:
		return stalled(jetsinkv1.ReasonS3AccessDenied,
			"%s denied %s on %s to the credentials in Secret %q (destination.credentialsSecretRef, access key ID %q): %s (%s)",
			where, action, object, d.secret, d.accessKey, d.hint(action, code), said)
	case code == "NoSuchBucket":
		return stalled(jetsinkv1.ReasonBucketNotFound,
			"bucket %q (destination.bucket) does not exist on %s", d.cfg.Bucket, where)
	case errors.Is(err, context.DeadlineExceeded):
		return retrying(jetsinkv1.ReasonS3Unreachable,
			"%s did not answer %s on %s within %s", where, action, object, destinationTimeout)
	}
	return retrying(jetsinkv1.ReasonS3Unreachable, "cannot check %s on %s with %s: %v", object, where, action, err)
}

// hint says what to fix for a 403, by S3's error code: the keys themselves,
// or the policy that lacks the action.
func (d denial) hint(action, code string) string {
	switch code {
	case "InvalidAccessKeyId":
		return "S3 does not know AWS_ACCESS_KEY_ID"
	case "SignatureDoesNotMatch":
		return "AWS_SECRET_ACCESS_KEY is not the secret of AWS_ACCESS_KEY_ID"
	case "ExpiredToken", "InvalidToken", "TokenRefreshRequired":
		return "AWS_SESSION_TOKEN is expired or invalid"
	}
	why := "to write Parquet files"
	if action == "s3:GetObject" {
		why = "to tell a file they wrote already (whose answer was lost) from another one under the same key"
	}
	return fmt.Sprintf("the workers need %s on arn:aws:s3:::%s/%s* %s: allow it in the IAM or bucket policy",
		action, d.cfg.Bucket, d.cfg.Prefix, why)
}

// isPreconditionFailed is S3's 412: If-None-Match found the key written.
func isPreconditionFailed(err error) bool {
	var resp *awshttp.ResponseError
	return errors.As(err, &resp) && resp.HTTPStatusCode() == http.StatusPreconditionFailed
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
