package table

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// Property names of what a sink has committed. The table properties are
// the state (they survive compaction and snapshot expiry); the snapshot
// summary has the commit's id and the stream, for audit and for resolving
// a commit whose outcome was lost.
const (
	propPrefix   = "jetsink."
	commitIDProp = "jetsink.commit-id"
)

func committedProp(sink string) string { return propPrefix + sink + ".committed" }
func streamProp(sink string) string    { return propPrefix + sink + ".stream" }

// File is one Parquet data file the worker wrote into the table's
// location, with the stream sequences of the events it holds.
type File struct {
	Path      string
	Size      int64
	Rows      int64
	Partition map[int]any // partition values by partition field ID
	Seqs      []uint64
}

// Outcome is what a Commit did.
type Outcome struct {
	// Committed are the files now in the table; their events may be ACKed.
	Committed []File
	// Already are sequences found in the table before this commit: they
	// were committed earlier (a redelivery after a lost ACK, a zombie's
	// events written elsewhere). ACK them; do not write them again.
	Already []uint64
	// Rewrite are files holding some events that are in the table and some
	// that are not: the caller writes them again without Already's events
	// and commits the new files. Nothing of theirs was committed.
	Rewrite []File
	// Snapshots is how many snapshots the table has after the commit (0
	// when it was found committed, not made): what snapshot expiry is for.
	Snapshots int
}

// Committer commits a sink's data files to its table so that each event
// is in it once: see docs/iceberg-exactly-once.md for the protocol and
// why it holds.
type Committer struct {
	Catalog table.CatalogIO
	Ident   table.Identifier
	// Sink names the sink's properties (its UID: two sinks may share a
	// table, each with its own committed set).
	Sink string
	// Stream is the stream's incarnation: a re-created stream numbers its
	// events from 1 again, and starts an empty set.
	Stream string
	// Backoff between attempts after a conflict or a failure; zero is
	// 100 ms doubling to 5 s.
	Backoff func(attempt int) time.Duration
	// Attempts counts commit attempts by outcome, when set (metrics).
	Attempts func(outcome string)
	// AttemptTimeout bounds one attempt (load, commit, read back): a
	// catalog that stops answering mid-request must not hold the events
	// for ever. Zero is 30 s.
	AttemptTimeout time.Duration
}

// Attempt outcomes given to Committer.Attempts.
const (
	AttemptOK       = "ok"
	AttemptConflict = "conflict"
	AttemptUnknown  = "unknown" // the catalog's answer was lost or an error
	AttemptFound    = "found"   // an unknown outcome read back as committed
)

// Commit commits files whose events are not in the table yet. ackFloor is
// the consumer's ack floor: nothing at or below it can be redelivered, so
// the committed set is trimmed to it. It retries conflicts and failures
// until it commits or ctx ends, like an S3 upload: the events stay held
// meanwhile, and no delivery is spent.
func (c *Committer) Commit(ctx context.Context, files []File, ackFloor uint64) (Outcome, error) {
	id := newCommitID()
	timeout := cmp.Or(c.AttemptTimeout, 30*time.Second)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, timeout)
		out, sent, err := c.attempt(actx, files, ackFloor, id)
		cancel()
		switch {
		case err == nil:
			return out, nil
		case isConflict(err):
			// Refused: another commit came first. Load it and go again.
			c.count(AttemptConflict)
		case sent:
			c.count(AttemptUnknown)
			// The request went out and no clear answer came back: the
			// commit may have happened (a lost response). Read the table
			// back before trying again; if the catalog cannot answer, the
			// next attempt reloads and finds the events committed anyway.
			rctx, cancel := context.WithTimeout(ctx, timeout)
			found, rerr := c.committedAs(rctx, id)
			cancel()
			if rerr == nil && found {
				c.count(AttemptFound)
				return out, nil
			}
		default:
			c.count(AttemptUnknown) // the catalog did not answer: nothing was sent
		}
		select {
		case <-ctx.Done():
			return Outcome{}, fmt.Errorf("commit to %s: %w (last error: %v)", strings.Join(c.Ident, "."), ctx.Err(), err)
		case <-time.After(c.delay(attempt)):
		}
	}
}

// attempt is one pass of the protocol on freshly loaded metadata. It
// returns the outcome it would have on success, and whether the commit
// request was sent (so that an error may hide a commit).
func (c *Committer) attempt(ctx context.Context, files []File, ackFloor uint64, id string) (Outcome, bool, error) {
	tbl, err := c.Catalog.LoadTable(ctx, c.Ident)
	if err != nil {
		return Outcome{}, false, fmt.Errorf("load table: %w", err)
	}
	have, err := c.committed(tbl)
	if err != nil {
		return Outcome{}, false, err
	}
	var out Outcome
	var added []uint64
	for _, f := range files {
		var in []uint64
		for _, s := range f.Seqs {
			if have.Contains(s) {
				in = append(in, s)
			}
		}
		switch {
		case len(in) == 0:
			out.Committed = append(out.Committed, f)
			added = append(added, f.Seqs...)
		case len(in) == len(f.Seqs):
			out.Already = append(out.Already, in...)
		default:
			out.Already = append(out.Already, in...)
			out.Rewrite = append(out.Rewrite, f)
		}
	}
	if len(out.Committed) == 0 {
		return out, false, nil
	}
	next := have.Add(added...).Trim(ackFloor)
	spec := tbl.Spec()
	dfs := make([]iceberg.DataFile, len(out.Committed))
	for i, f := range out.Committed {
		b, err := iceberg.NewDataFileBuilder(spec, iceberg.EntryContentData, f.Path, iceberg.ParquetFile, f.Partition, nil, nil, f.Rows, f.Size)
		if err != nil {
			return Outcome{}, false, fmt.Errorf("data file %s: %w", f.Path, err)
		}
		dfs[i] = b.Build()
	}
	props := iceberg.Properties{committedProp(c.Sink): next.String(), streamProp(c.Sink): c.Stream}
	tx := tbl.NewTransaction()
	if err := tx.SetProperties(props); err != nil {
		return Outcome{}, false, err
	}
	// Not the committed set: every snapshot's summary stays in the
	// metadata until the snapshot expires, and a copy of the set in each
	// made metadata.json grow by the set's size per commit (1 MB after 15
	// commits in hack/bench), which every load parses.
	summary := iceberg.Properties{commitIDProp: id, streamProp(c.Sink): c.Stream}
	// The duplicate check reads every manifest, so its cost grows with the
	// table; the committed set is what keeps files from going in twice.
	if err := tx.AddDataFiles(ctx, dfs, summary, table.WithoutDuplicateCheck()); err != nil {
		return Outcome{}, false, fmt.Errorf("add data files: %w", err)
	}
	committed, err := tx.Commit(ctx)
	if err != nil {
		return out, true, fmt.Errorf("commit: %w", err)
	}
	out.Snapshots = len(committed.Metadata().Snapshots())
	c.count(AttemptOK)
	return out, true, nil
}

// committed is the set the table says the sink has committed, empty for a
// new stream incarnation.
func (c *Committer) committed(tbl *table.Table) (SeqSet, error) {
	p := tbl.Properties()
	text, ok := p[committedProp(c.Sink)]
	if !ok || p[streamProp(c.Sink)] != c.Stream {
		return SeqSet{}, nil
	}
	return ParseSeqSet(text)
}

// committedAs reports whether a snapshot of the table carries commit id.
func (c *Committer) committedAs(ctx context.Context, id string) (bool, error) {
	tbl, err := c.Catalog.LoadTable(ctx, c.Ident)
	if err != nil {
		return false, err
	}
	snaps := tbl.Metadata().Snapshots()
	return slices.ContainsFunc(snaps, func(s table.Snapshot) bool {
		return s.Summary != nil && s.Summary.Properties[commitIDProp] == id
	}), nil
}

// isConflict reports a commit refused because the table changed since it
// was loaded: iceberg-go's ErrCommitFailed, or a catalog's failed
// requirement (the SQL catalog returns that one unwrapped).
func isConflict(err error) bool {
	return errors.Is(err, table.ErrCommitFailed) || strings.Contains(err.Error(), "requirement failed")
}

func (c *Committer) delay(attempt int) time.Duration {
	if c.Backoff != nil {
		return c.Backoff(attempt)
	}
	return min(100*time.Millisecond<<min(attempt-1, 6), 5*time.Second)
}

func (c *Committer) count(outcome string) {
	if c.Attempts != nil {
		c.Attempts(outcome)
	}
}

func newCommitID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
