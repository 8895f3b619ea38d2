package sinkworker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
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

// metaBatch is the user metadata that identifies which events a file holds:
// a hash of its stream sequences. On a 412 it tells "my own earlier upload"
// (success) from "a different batch with the same first and last sequence".
const metaBatch = "jetsink-batch"

// uploader writes Parquet files to S3, never overwriting one.
type uploader struct {
	client  *s3.Client
	bucket  string
	metrics *metrics
}

func newUploader(ctx context.Context, cfg config.Config, m *metrics) (*uploader, error) {
	// Credentials and the rest come from the SDK's default chain, so the
	// same binary works with env keys, IRSA or an instance role.
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(cfg.Region))
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.ForcePathStyle
	})
	return &uploader{client: client, bucket: cfg.Bucket, metrics: m}, nil
}

// objectKey is the Hive-style, deterministic key of a batch's file: the same
// events always map to the same key, so a retry cannot write a second copy.
func objectKey(prefix, stream, consumer string, key partitionKey, granularity string, firstSeq, lastSeq uint64) string {
	t := time.Unix(key.bucket, 0).UTC()
	var sb strings.Builder
	sb.Grow(len(prefix) + len(key.app) + len(stream) + len(consumer) + 80)
	sb.WriteString(prefix)
	sb.WriteString("app_id=")
	sb.WriteString(key.app)
	sb.WriteString("/date=")
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

// batchID hashes a batch's stream sequences (sorted).
func batchID(msgs []trackedMsg) string {
	h := fnv.New64a()
	var b [8]byte
	for _, m := range msgs {
		for i := range 8 {
			b[i] = byte(m.seq >> (8 * i))
		}
		h.Write(b[:])
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// put writes body at key unless it exists. A key that exists already holds
// this very batch when its metadata says so (an earlier attempt succeeded
// but its answer was lost): that is success. If it holds a different batch
// with the same first and last sequence (possible when redeliveries regroup
// events), the file goes to a key suffixed with the batch id instead of
// being dropped or clobbering the other.
func (u *uploader) put(ctx context.Context, key string, body []byte, id string) (string, error) {
	err := u.putIfAbsent(ctx, key, body, id)
	if !isPreconditionFailed(err) {
		return key, err
	}
	head, herr := u.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &u.bucket, Key: &key})
	if herr != nil {
		u.metrics.s3Errors.WithLabelValues("HeadObject").Inc()
		return key, fmt.Errorf("head existing object %s: %w", key, herr)
	}
	if head.Metadata[metaBatch] == id {
		return key, nil
	}
	alt := strings.TrimSuffix(key, ".parquet") + "-" + id + ".parquet"
	err = u.putIfAbsent(ctx, alt, body, id)
	if isPreconditionFailed(err) {
		return alt, nil // the alternate key is unique to this batch's events
	}
	return alt, err
}

func (u *uploader) putIfAbsent(ctx context.Context, key string, body []byte, id string) error {
	_, err := u.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &u.bucket,
		Key:           &key,
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
		ContentType:   aws.String("application/vnd.apache.parquet"),
		IfNoneMatch:   aws.String("*"),
		Metadata:      map[string]string{metaBatch: id},
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
