package table

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// newTable creates the IoT table on a real catalog and returns a committer
// for it.
func newTable(t *testing.T, cat catalog.Catalog) *Committer {
	t.Helper()
	ident := table.Identifier{"iot", "readings"}
	if _, err := Ensure(context.Background(), cat, ident, iotSchema(), config.GranularityHour); err != nil {
		t.Fatal(err)
	}
	return &Committer{Catalog: cat, Ident: ident, Sink: "uid-1", Stream: "IOT.1",
		Backoff: func(int) time.Duration { return 10 * time.Millisecond }}
}

// file is a data file of the IoT table's first partition holding seqs.
func file(name string, seqs ...uint64) File {
	return File{Path: "s3://lake/warehouse/iot/readings/data/" + name + ".parquet", Size: 1024, Rows: int64(len(seqs)),
		Partition: map[int]any{1000: "d1", 1001: int32(490000)}, Seqs: seqs}
}

func dataFiles(t *testing.T, c *Committer) string {
	t.Helper()
	tbl, err := c.Catalog.LoadTable(context.Background(), c.Ident)
	if err != nil {
		t.Fatal(err)
	}
	if tbl.CurrentSnapshot() == nil {
		return "0"
	}
	return tbl.CurrentSnapshot().Summary.Properties["total-data-files"]
}

func committedText(t *testing.T, c *Committer) string {
	t.Helper()
	tbl, err := c.Catalog.LoadTable(context.Background(), c.Ident)
	if err != nil {
		t.Fatal(err)
	}
	return tbl.Properties()[committedProp(c.Sink)]
}

// A redelivered event that is in the table is recognised and not written
// again, whether its file holds only such events or a mix.
func TestCommitRecognisesEventsAlreadyInTheTable(t *testing.T) {
	ctx := context.Background()
	c := newTable(t, testCatalog(t))
	out, err := c.Commit(ctx, []File{file("a", 1, 2, 3)}, 0)
	if err != nil || len(out.Committed) != 1 {
		t.Fatalf("first commit: %+v, %v", out, err)
	}
	if got := committedText(t, c); got != "3;" {
		t.Errorf("committed %q, want 3;", got)
	}
	// 2 and 3 again (a lost ACK), alone and mixed with new ones.
	out, err = c.Commit(ctx, []File{file("b", 2, 3), file("c", 3, 5), file("d", 6, 7)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Committed) != 1 || out.Committed[0].Path != file("d").Path {
		t.Errorf("committed %+v, want only d", out.Committed)
	}
	if len(out.Rewrite) != 1 || out.Rewrite[0].Path != file("c").Path {
		t.Errorf("to rewrite %+v, want c", out.Rewrite)
	}
	if !slices.Equal(out.Already, []uint64{2, 3, 3}) {
		t.Errorf("already committed %v, want [2 3 3]", out.Already)
	}
	if got := dataFiles(t, c); got != "2" {
		t.Errorf("table holds %s data files, want 2 (a and d)", got)
	}
	if got := committedText(t, c); got != "3;6-7" {
		t.Errorf("committed %q, want 3;6-7", got)
	}
	// The consumer's ack floor trims the set.
	if _, err := c.Commit(ctx, []File{file("e", 9)}, 7); err != nil {
		t.Fatal(err)
	}
	if got := committedText(t, c); got != "7;9" {
		t.Errorf("committed %q after the floor moved to 7, want 7;9", got)
	}
	// A new stream incarnation starts an empty set.
	c2 := *c
	c2.Stream = "IOT.2"
	if out, err := c2.Commit(ctx, []File{file("f", 1)}, 0); err != nil || len(out.Committed) != 1 {
		t.Errorf("commit after the stream was re-created: %+v, %v", out, err)
	}
}

// The metadata a commit writes (and every load parses) grows by a
// snapshot's few fields per commit, not by a copy of the committed set:
// with files of interleaved partitions the set holds thousands of ranges
// while the ack floor lags, and a copy of it in each snapshot's summary
// grew the bench table's metadata.json to 1 MB in 15 commits.
func TestMetadataDoesNotGrowWithTheCommittedSet(t *testing.T) {
	ctx := context.Background()
	c := newTable(t, testCatalog(t))
	metadataSize := func() int {
		tbl, err := c.Catalog.LoadTable(ctx, c.Ident)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(tbl.Metadata())
		if err != nil {
			t.Fatal(err)
		}
		return len(b)
	}
	const commits, perFile = 20, 500
	var first int
	for i := range commits {
		// Every other sequence of a fresh stretch: 500 ranges a commit,
		// none merged by the floor (it stays at 0).
		seqs := make([]uint64, perFile)
		for j := range seqs {
			seqs[j] = uint64(i*2*perFile + 2*j + 1)
		}
		if _, err := c.Commit(ctx, []File{file(fmt.Sprint("f", i), seqs...)}, 0); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = metadataSize()
		}
	}
	set := len(committedText(t, c))
	if set < commits*perFile*4 {
		t.Fatalf("the committed set is %d bytes: the test did not fragment it", set)
	}
	// After the first commit the metadata holds the set once; since then
	// the set grew and each commit added a snapshot and a log entry.
	if got, limit := metadataSize(), first+set+commits*2048; got > limit {
		t.Errorf("metadata is %d bytes after %d commits, want at most %d (the set, %d bytes, once)", got, commits, limit, set)
	}
}

// Several pods commit to one table at once: conflicts are retried on the
// table as it is then, and every file goes in once.
func TestConcurrentCommitsPutEachFileInOnce(t *testing.T) {
	ctx := context.Background()
	cat := testCatalog(t)
	base := newTable(t, cat)
	var conflicts atomic.Int64
	const pods, commits = 3, 5
	var wg sync.WaitGroup
	errs := make(chan error, pods*commits)
	for p := range pods {
		c := *base
		c.Attempts = func(o string) {
			if o == AttemptConflict {
				conflicts.Add(1)
			}
		}
		wg.Go(func() {
			for k := range commits {
				seq := uint64(p*commits + k + 1)
				if _, err := c.Commit(ctx, []File{file(fmt.Sprintf("p%d-%d", p, k), seq)}, 0); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := dataFiles(t, base); got != fmt.Sprint(pods*commits) {
		t.Errorf("table holds %s data files, want %d", got, pods*commits)
	}
	if got := committedText(t, base); got != fmt.Sprintf("%d;", pods*commits) {
		t.Errorf("committed %q, want every sequence", got)
	}
	t.Logf("%d conflicts retried", conflicts.Load())
}

// lossyCatalog is the real catalog, except that it loses the answer to the
// next commits it makes: the commit happened, the caller cannot know. (No
// real server or proxy here can drop exactly that answer; everything else
// is the real catalog.)
type lossyCatalog struct {
	catalog.Catalog
	lose atomic.Int32
}

func (l *lossyCatalog) LoadTable(ctx context.Context, ident table.Identifier) (*table.Table, error) {
	t, err := l.Catalog.LoadTable(ctx, ident)
	if err != nil {
		return nil, err
	}
	return table.New(t.Identifier(), t.Metadata(), t.MetadataLocation(), t.FS, l), nil
}

func (l *lossyCatalog) CommitTable(ctx context.Context, ident table.Identifier, reqs []table.Requirement, ups []table.Update) (table.Metadata, string, error) {
	m, loc, err := l.Catalog.CommitTable(ctx, ident, reqs, ups)
	if err == nil && l.lose.Add(-1) >= 0 {
		return nil, "", errors.New("read tcp: connection reset by peer")
	}
	return m, loc, err
}

// A commit whose answer is lost is found in the table's history and not
// made again.
func TestLostCommitResponseIsReadBackNotRepeated(t *testing.T) {
	ctx := context.Background()
	lossy := &lossyCatalog{Catalog: testCatalog(t)}
	c := newTable(t, lossy)
	var outcomes []string
	c.Attempts = func(o string) { outcomes = append(outcomes, o) }
	lossy.lose.Store(1)
	out, err := c.Commit(ctx, []File{file("a", 1, 2)}, 0)
	if err != nil || len(out.Committed) != 1 {
		t.Fatalf("commit: %+v, %v", out, err)
	}
	if got := dataFiles(t, c); got != "1" {
		t.Errorf("table holds %s data files, want 1", got)
	}
	if !slices.Equal(outcomes, []string{AttemptUnknown, AttemptFound}) {
		t.Errorf("attempts %v, want unknown then found", outcomes)
	}
}
