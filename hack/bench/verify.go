package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/parquet-go/parquet-go"
	"k8s.io/utils/ptr"
)

// verification is what the bucket holds under one run's prefix.
type verification struct {
	files      int
	bytes      int64
	footerRows int64 // sum of the files' footer row counts
	missing    uint64
	duplicates uint64
	outside    uint64 // sequences outside 1..total
}

func (v verification) ok(total uint64) bool {
	return v.footerRows == int64(total) && v.missing == 0 && v.duplicates == 0 && v.outside == 0
}

func (v verification) String() string {
	return fmt.Sprintf("%d files, %d rows in footers, %d missing, %d duplicate, %d unexpected",
		v.files, v.footerRows, v.missing, v.duplicates, v.outside)
}

// seqRow projects a file onto its _stream_seq column.
type seqRow struct {
	StreamSeq int64 `parquet:"_stream_seq"`
}

// verify lists every object under prefix, reads each one back from S3, sums
// the row counts in the Parquet footers and, when full is set, checks the
// _stream_seq column: each of 1..total exactly once.
func (s *stack) verify(ctx context.Context, prefix string, total uint64, full bool) (verification, error) {
	var v verification
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.s3, &s3.ListObjectsV2Input{Bucket: ptr.To(bucket), Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return v, fmt.Errorf("list s3://%s/%s: %w", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
			v.bytes += aws.ToInt64(o.Size)
		}
	}
	v.files = len(keys)
	seen := make([]uint8, total+1)
	var mu sync.Mutex
	g := newPool(ctx, 8)
	for _, key := range keys {
		g.Go(func(gctx context.Context) error {
			out, err := s.s3.GetObject(gctx, &s3.GetObjectInput{Bucket: ptr.To(bucket), Key: &key})
			if err != nil {
				return fmt.Errorf("get %s: %w", key, err)
			}
			body, err := io.ReadAll(out.Body)
			out.Body.Close()
			if err != nil {
				return err
			}
			f, err := parquet.OpenFile(bytes.NewReader(body), int64(len(body)))
			if err != nil {
				return fmt.Errorf("%s is not Parquet: %w", key, err)
			}
			var seqs []seqRow
			if full {
				r := parquet.NewGenericReader[seqRow](f)
				seqs = make([]seqRow, f.NumRows())
				n, err := r.Read(seqs)
				if err != nil && err != io.EOF {
					return fmt.Errorf("read %s: %w", key, err)
				}
				seqs = seqs[:n]
				r.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			v.footerRows += f.NumRows()
			for _, r := range seqs {
				switch {
				case r.StreamSeq < 1 || uint64(r.StreamSeq) > total:
					v.outside++
				case seen[r.StreamSeq] > 0:
					v.duplicates++
				default:
					seen[r.StreamSeq] = 1
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return v, err
	}
	if full {
		for seq := uint64(1); seq <= total; seq++ {
			if seen[seq] == 0 {
				v.missing++
			}
		}
	} else if v.footerRows < int64(total) {
		v.missing = total - uint64(v.footerRows)
	} else {
		v.duplicates = uint64(v.footerRows) - total
	}
	return v, nil
}

// pool runs functions on at most n goroutines and keeps the first error.
type pool struct {
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
	err    error
}

func newPool(ctx context.Context, n int) *pool {
	ctx, cancel := context.WithCancel(ctx)
	return &pool{ctx: ctx, cancel: cancel, sem: make(chan struct{}, n)}
}

func (p *pool) Go(fn func(context.Context) error) {
	p.sem <- struct{}{}
	p.wg.Go(func() {
		defer func() { <-p.sem }()
		if err := fn(p.ctx); err != nil {
			p.once.Do(func() { p.err = err; p.cancel() })
		}
	})
}

func (p *pool) Wait() error {
	p.wg.Wait()
	p.cancel()
	return p.err
}
