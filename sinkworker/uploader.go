package sinkworker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// metaSHA256 is the user metadata holding the hex SHA-256 of the file. On a
// 412 it tells "my own earlier upload, whose answer was lost" (the stored
// bytes are exactly what this batch would write) from "another file under
// the same key".
const metaSHA256 = "jetsink-sha256"

// uploader writes Parquet files to S3, never overwriting one.
type uploader struct {
	client  *s3.Client
	bucket  string
	metrics *metrics
	// aws is the client's configuration (credentials, region, the HTTP
	// client with its CA, timeouts and connection pool), which the table
	// sink lends iceberg-go for the table's metadata.
	aws aws.Config
}

// Timeouts of the S3 client: an answer that never comes must fail the
// attempt, so the batch is retried instead of holding its flusher for ever.
const (
	s3DialTimeout     = 5 * time.Second
	s3ResponseTimeout = 30 * time.Second
)

// attemptTimeout bounds one upload attempt (PUT, and the HEAD of a 412):
// the fixed part plus the body at 1 MiB/s, so a 64 MiB file on a slow link
// still has time.
func attemptTimeout(size int) time.Duration {
	return s3ResponseTimeout + time.Duration(size>>20)*time.Second
}

func newUploader(ctx context.Context, cfg config.Config, m *metrics) (*uploader, error) {
	// Credentials and the rest come from the SDK's default chain, so the
	// same binary works with env keys, IRSA or an instance role.
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(cfg.Region))
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	// A private CA (destination.tls) is trusted besides the system's.
	tlsConfig, err := cfg.S3TLSConfig()
	if err != nil {
		return nil, err
	}
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = s3DialTimeout }).
		WithTransportOptions(func(t *http.Transport) {
			t.TLSHandshakeTimeout = s3DialTimeout
			t.ResponseHeaderTimeout = s3ResponseTimeout
			if tlsConfig != nil {
				// Keep the SDK's own TLS settings (minimum version,
				// FIPS curves); only the roots change.
				if t.TLSClientConfig == nil {
					t.TLSClientConfig = tlsConfig.Clone()
				} else {
					t.TLSClientConfig = t.TLSClientConfig.Clone()
					t.TLSClientConfig.RootCAs = tlsConfig.RootCAs
				}
			}
		})
	awsCfg.HTTPClient = httpClient
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.ForcePathStyle
		// The worker retries a failed upload itself, for as long as it
		// takes and with its own backoff: one attempt is one request, so
		// jetsink_upload_attempts_total counts what S3 saw, and the SDK's
		// retry quota cannot turn a long outage into instant failures.
		o.Retryer = aws.NopRetryer{}
	})
	return &uploader{client: client, bucket: cfg.Bucket, metrics: m, aws: awsCfg}, nil
}

// objectKey is the Hive-style, deterministic key of a batch's file: the same
// events always map to the same key, so a retry cannot write a second copy.
// partition is the path before date= (app_id=shop, tenant=acme/region=eu,
// or empty), bucket the Unix time the partition's hour or day starts.
// stream names the stream's incarnation (streamIncarnation), not just its
// name: a stream deleted and re-created numbers its events from 1 again,
// and its batches must not land on the keys of the old one's.
func objectKey(prefix, stream, consumer, partition string, bucket int64, granularity string, firstSeq, lastSeq uint64) string {
	t := time.Unix(bucket, 0).UTC()
	var sb strings.Builder
	sb.Grow(len(prefix) + len(partition) + len(stream) + len(consumer) + 80)
	sb.WriteString(prefix)
	if partition != "" {
		sb.WriteString(partition)
		sb.WriteByte('/')
	}
	sb.WriteString("date=")
	sb.WriteString(t.Format("2006-01-02"))
	if granularity != config.GranularityDay {
		sb.WriteString("/hour=")
		sb.WriteString(t.Format("15"))
	}
	sb.WriteByte('/')
	sb.WriteString(stream)
	sb.WriteByte('-')
	sb.WriteString(consumer)
	sb.WriteByte('-')
	sb.WriteString(strconv.FormatUint(firstSeq, 10))
	sb.WriteByte('-')
	sb.WriteString(strconv.FormatUint(lastSeq, 10))
	sb.WriteString(".parquet")
	return sb.String()
}

// streamIncarnation names one incarnation of a stream in object keys: its
// name and its creation time (hex nanoseconds), which JetStream keeps with
// the stream and which changes when it is deleted and re-created.
func streamIncarnation(name string, created time.Time) string {
	return name + "." + strconv.FormatInt(created.UnixNano(), 16)
}

// contentHash is the hex SHA-256 of a file, stored in its metadata.
func contentHash(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// put writes body at key unless it exists, and reports where the file is
// and whether it found it written already. A key that exists holds this
// very file when its stored SHA-256 and length are this body's (an earlier
// attempt succeeded but its answer was lost): that is success. A different
// file under the key (possible when redeliveries regroup events, or another
// writer uses the same names) is neither clobbered nor taken for this one:
// the body goes to a key suffixed with its own hash instead.
func (u *uploader) put(ctx context.Context, key string, body []byte, sum string) (string, error) {
	ok, err := u.putOnce(ctx, key, body, sum)
	if ok || err != nil {
		return key, err
	}
	u.metrics.alreadyWritten.WithLabelValues(writtenDifferent).Inc()
	alt := strings.TrimSuffix(key, ".parquet") + "-" + sum[:16] + ".parquet"
	ok, err = u.putOnce(ctx, alt, body, sum)
	if err == nil && !ok {
		err = fmt.Errorf("s3://%s/%s holds another file with this file's hash prefix", u.bucket, alt)
	}
	return alt, err
}

// putOnce writes body at key if absent. ok is false, with no error, when
// the key holds a different file.
func (u *uploader) putOnce(ctx context.Context, key string, body []byte, sum string) (ok bool, err error) {
	err = u.putIfAbsent(ctx, key, body, sum)
	if !isPreconditionFailed(err) {
		return err == nil, err
	}
	head, err := u.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &u.bucket, Key: &key})
	if err != nil {
		u.metrics.s3Errors.WithLabelValues("HeadObject").Inc()
		return false, fmt.Errorf("head existing object %s: %w", key, err)
	}
	if head.Metadata[metaSHA256] == sum && aws.ToInt64(head.ContentLength) == int64(len(body)) {
		u.metrics.alreadyWritten.WithLabelValues(writtenIdentical).Inc()
		return true, nil
	}
	return false, nil
}

func (u *uploader) putIfAbsent(ctx context.Context, key string, body []byte, sum string) error {
	_, err := u.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &u.bucket,
		Key:           &key,
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
		ContentType:   aws.String("application/vnd.apache.parquet"),
		IfNoneMatch:   aws.String("*"),
		Metadata:      map[string]string{metaSHA256: sum},
	})
	if err != nil && !isPreconditionFailed(err) {
		u.metrics.s3Errors.WithLabelValues("PutObject").Inc()
		return fmt.Errorf("put s3://%s/%s: %w", u.bucket, key, err)
	}
	return err
}

func isPreconditionFailed(err error) bool {
	if err == nil {
		return false
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() == 412 {
		return true
	}
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "PreconditionFailed"
}
