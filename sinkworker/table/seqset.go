package table

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// SeqSet is a set of stream sequences as the table keeps it: every
// sequence at or below Floor, and the Ranges above it. It is what a sink
// has committed (see docs/iceberg-exactly-once.md): the floor follows the
// consumer's ack floor, so the ranges are only what was in flight, and the
// text form stays short however long the sink runs.
type SeqSet struct {
	Floor  uint64
	Ranges []SeqRange // sorted, disjoint, not adjacent, all above Floor
}

// SeqRange is the sequences [First, Last].
type SeqRange struct{ First, Last uint64 }

// Contains reports whether s is in the set.
func (c SeqSet) Contains(s uint64) bool {
	if s <= c.Floor {
		return true
	}
	_, found := slices.BinarySearchFunc(c.Ranges, s, func(r SeqRange, s uint64) int {
		switch {
		case r.Last < s:
			return -1
		case r.First > s:
			return 1
		}
		return 0
	})
	return found
}

// Add returns the set with seqs added (seqs need not be sorted). They are
// sorted as numbers and runs of them made ranges before normalize sorts
// ranges: a commit of 100,000 events from interleaved partitions sorted
// 100,000 single ranges by a comparison function.
func (c SeqSet) Add(seqs ...uint64) SeqSet {
	sorted := slices.Clone(seqs)
	slices.Sort(sorted)
	rs := slices.Clone(c.Ranges)
	for _, s := range sorted {
		switch n := len(rs); {
		case s <= c.Floor:
		case n > len(c.Ranges) && s <= rs[n-1].Last+1:
			rs[n-1].Last = s
		default:
			rs = append(rs, SeqRange{s, s})
		}
	}
	return normalize(c.Floor, rs)
}

// Union returns the sequences in either set.
func (c SeqSet) Union(o SeqSet) SeqSet {
	return normalize(max(c.Floor, o.Floor), append(slices.Clone(c.Ranges), o.Ranges...))
}

// Trim raises the floor to floor (when higher), dropping the ranges it
// covers. Only a floor below which nothing can be redelivered may be given:
// the consumer's ack floor.
func (c SeqSet) Trim(floor uint64) SeqSet {
	if floor <= c.Floor {
		return c
	}
	return normalize(floor, slices.Clone(c.Ranges))
}

// normalize is the set of floor and rs: the ranges sorted, merged and cut
// at the floor, and the floor grown over a range that starts right above
// it (the same set, written shorter).
func normalize(floor uint64, rs []SeqRange) SeqSet {
	slices.SortFunc(rs, func(a, b SeqRange) int {
		switch {
		case a.First < b.First:
			return -1
		case a.First > b.First:
			return 1
		}
		return 0
	})
	out := rs[:0]
	for _, r := range rs {
		switch n := len(out); {
		case r.Last <= floor:
		case r.First <= floor+1 && n == 0:
			floor = r.Last
		case n > 0 && r.First <= out[n-1].Last+1:
			out[n-1].Last = max(out[n-1].Last, r.Last)
		default:
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		out = nil
	}
	return SeqSet{Floor: floor, Ranges: out}
}

// String is the set's text form in table properties: "F;a-b,c,d-e".
func (c SeqSet) String() string {
	var b strings.Builder
	b.WriteString(strconv.FormatUint(c.Floor, 10))
	b.WriteByte(';')
	for i, r := range c.Ranges {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(r.First, 10))
		if r.Last != r.First {
			b.WriteByte('-')
			b.WriteString(strconv.FormatUint(r.Last, 10))
		}
	}
	return b.String()
}

// ParseSeqSet reads String's form. It refuses anything else: a set that
// reads wrong would commit events twice or lose them.
func ParseSeqSet(text string) (SeqSet, error) {
	floorText, rangesText, ok := strings.Cut(text, ";")
	if !ok {
		return SeqSet{}, fmt.Errorf("committed set %q: no ';' after the floor", text)
	}
	floor, err := strconv.ParseUint(floorText, 10, 64)
	if err != nil {
		return SeqSet{}, fmt.Errorf("committed set %q: floor: %w", text, err)
	}
	c := SeqSet{Floor: floor}
	if rangesText == "" {
		return c, nil
	}
	last := floor
	for item := range strings.SplitSeq(rangesText, ",") {
		firstText, lastText, isRange := strings.Cut(item, "-")
		first, err1 := strconv.ParseUint(firstText, 10, 64)
		end := first
		var err2 error
		if isRange {
			end, err2 = strconv.ParseUint(lastText, 10, 64)
		}
		if err := errors.Join(err1, err2); err != nil {
			return SeqSet{}, fmt.Errorf("committed set %q: range %q: %w", text, item, err)
		}
		if first <= last+1 || end < first {
			return SeqSet{}, fmt.Errorf("committed set %q: range %q is not above the one before it and the floor", text, item)
		}
		c.Ranges = append(c.Ranges, SeqRange{first, end})
		last = end
	}
	return c, nil
}
