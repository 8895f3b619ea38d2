package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"

	"github.com/jetsink/jetsink/sinkworker"
)

// lake reads the bucket back the way a query engine would: every Parquet
// object under the prefix, every row's event_id. It talks to versitygw
// directly, never through the proxies. Objects are read once each and
// kept by key and ETag, so polling while a case settles only reads what
// is new; an object whose ETag changed (overwritten) is read again.
type lake struct {
	client *s3.Client
	bucket string
	prefix string

	mu    sync.Mutex
	files map[string]lakeFile
	// table, in a table case, is what is read instead of the objects.
	table *tableReader
}

type lakeFile struct {
	etag string
	ids  []string
}

func newLake(client *s3.Client, bucket, prefix string) *lake {
	return &lake{client: client, bucket: bucket, prefix: prefix, files: map[string]lakeFile{}}
}

// rows returns, for every event id in the bucket, how many rows hold it,
// and the number of objects and rows.
func (l *lake) rows(ctx context.Context) (ids map[string]int, objects, rows int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.table != nil {
		return l.table.rows(ctx)
	}
	seen := map[string]bool{}
	pages := s3.NewListObjectsV2Paginator(l.client, &s3.ListObjectsV2Input{Bucket: &l.bucket, Prefix: &l.prefix})
	type todo struct{ key, etag string }
	var fetch []todo
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("list s3://%s/%s: %w", l.bucket, l.prefix, err)
		}
		for _, o := range page.Contents {
			key, etag := aws.ToString(o.Key), aws.ToString(o.ETag)
			seen[key] = true
			if f, ok := l.files[key]; !ok || f.etag != etag {
				fetch = append(fetch, todo{key, etag})
			}
		}
	}
	// A few GETs side by side: the memory case has thousands of objects.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, 8)
	for _, t := range fetch {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ids, err := l.read(ctx, t.key)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			l.files[t.key] = lakeFile{etag: t.etag, ids: ids}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, 0, 0, err
	}
	for key := range l.files {
		if !seen[key] {
			delete(l.files, key) // deleted from the bucket: its rows are gone
		}
	}
	ids = map[string]int{}
	for _, f := range l.files {
		for _, id := range f.ids {
			ids[id]++
		}
		rows += len(f.ids)
	}
	return ids, len(l.files), rows, nil
}

func (l *lake) read(ctx context.Context, key string) ([]string, error) {
	out, err := l.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &l.bucket, Key: &key})
	if err != nil {
		return nil, fmt.Errorf("get s3://%s/%s: %w", l.bucket, key, err)
	}
	body, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read s3://%s/%s: %w", l.bucket, key, err)
	}
	rows, err := parquet.Read[sinkworker.Row](bytes.NewReader(body), int64(len(body)))
	if err != nil {
		return nil, fmt.Errorf("parquet s3://%s/%s: %w", l.bucket, key, err)
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.EventID
	}
	return ids, nil
}

// dlqEvent is one message of the dead-letter stream.
type dlqEvent struct {
	id     string // the event_id in its (original) body
	reason string // the Jetsink-Error header
}

// deadLettered reads every message of the DLQ stream; an absent stream
// holds none.
func deadLettered(ctx context.Context, js jetstream.JetStream, stream string) ([]dlqEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dlq stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("dlq stream %s: %w", stream, err)
	}
	var out []dlqEvent
	if info.State.Msgs == 0 {
		return nil, nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("dlq stream %s seq %d: %w", stream, seq, err)
		}
		var body struct {
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(m.Data, &body)
		out = append(out, dlqEvent{id: body.EventID, reason: m.Header.Get(sinkworker.HeaderError)})
	}
	return out, nil
}
