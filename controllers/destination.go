package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	corev1 "k8s.io/api/core/v1"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// destinationTimeout bounds the bucket check so a slow store never stalls
// the reconcile queue.
const destinationTimeout = 5 * time.Second

// checkDestination asks the bucket, with the credentials of the sink's S3
// Secret, whether the workers will be able to write to it, so wrong keys or
// a misspelt bucket show on the sink instead of only as failed uploads in
// the workers' logs. Without a Secret the workers use their pod's identity,
// which the operator does not have, so there is nothing it can check.
func checkDestination(ctx context.Context, cfg config.Config, secret *corev1.Secret) *problem {
	if secret == nil {
		return nil
	}
	client := s3.New(s3.Options{
		Region:       cfg.Region,
		UsePathStyle: cfg.ForcePathStyle,
		Credentials: credentials.NewStaticCredentialsProvider(
			string(secret.Data["AWS_ACCESS_KEY_ID"]), string(secret.Data["AWS_SECRET_ACCESS_KEY"]),
			string(secret.Data["AWS_SESSION_TOKEN"])),
		BaseEndpoint:     optional(cfg.Endpoint),
		RetryMaxAttempts: 1,
	})
	ctx, cancel := context.WithTimeout(ctx, destinationTimeout)
	defer cancel()
	_, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(cfg.Bucket)})
	if err == nil {
		return nil
	}
	where := "S3"
	if cfg.Endpoint != "" {
		where = cfg.Endpoint
	}
	var resp *awshttp.ResponseError
	if errors.As(err, &resp) {
		switch resp.HTTPStatusCode() {
		case http.StatusForbidden, http.StatusUnauthorized:
			return &problem{Reason: jetsinkv1.ReasonS3AccessDenied, transient: true, Message: fmt.Sprintf(
				"%s refused the credentials in Secret %q (destination.credentialsSecretRef) for bucket %q: check the keys and the bucket policy",
				where, secret.Name, cfg.Bucket)}
		case http.StatusNotFound:
			return &problem{Reason: jetsinkv1.ReasonBucketNotFound, transient: true, Message: fmt.Sprintf(
				"bucket %q (destination.bucket) does not exist on %s", cfg.Bucket, where)}
		}
	}
	return &problem{Reason: jetsinkv1.ReasonS3Unreachable, transient: true, Message: fmt.Sprintf(
		"cannot check bucket %q on %s: %v", cfg.Bucket, where, err)}
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
