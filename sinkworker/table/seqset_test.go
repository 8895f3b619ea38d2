package table

import (
	"math/rand/v2"
	"testing"
)

func TestSeqSetAddMergesAndGrowsTheFloor(t *testing.T) {
	c := SeqSet{Floor: 10}.Add(15, 12, 13, 20, 11, 21, 5)
	if got, want := c.String(), "13;15,20-21"; got != want {
		t.Fatalf("set %s, want %s", got, want)
	}
	for s, want := range map[uint64]bool{1: true, 13: true, 14: false, 15: true, 16: false, 20: true, 21: true, 22: false} {
		if c.Contains(s) != want {
			t.Errorf("Contains(%d) = %v", s, !want)
		}
	}
	if got := c.Trim(20).String(); got != "21;" {
		t.Errorf("Trim(20) = %s, want 21;", got)
	}
	if got := c.Union(SeqSet{Floor: 3, Ranges: []SeqRange{{16, 18}, {30, 31}}}).String(); got != "13;15-18,20-21,30-31" {
		t.Errorf("Union = %s", got)
	}
}

// Whatever is added, in whatever order, the set holds exactly those
// sequences and reads back from its text as the same set.
func TestSeqSetIsTheSetOfWhatWasAdded(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		floor := uint64(r.IntN(50))
		c := SeqSet{Floor: floor}
		want := map[uint64]bool{}
		for range r.IntN(100) {
			// A run of consecutive seqs in one Add (as a file's are), a
			// repeat at its end (a redelivery in the same batch).
			s, run := uint64(r.IntN(300)), []uint64{}
			for i := range uint64(1 + r.IntN(6)) {
				run = append(run, s+i)
				want[s+i] = true
			}
			c = c.Add(append(run, run[len(run)-1])...)
		}
		if round%3 == 0 {
			f := uint64(r.IntN(300))
			c = c.Trim(f)
			floor = max(floor, f)
		}
		for s := range uint64(320) {
			if got := c.Contains(s); got != (s <= floor || want[s]) {
				t.Fatalf("round %d: Contains(%d) = %v in %s", round, s, got, c)
			}
		}
		back, err := ParseSeqSet(c.String())
		if err != nil || back.String() != c.String() {
			t.Fatalf("round %d: %s reads back as %s, %v", round, c, back, err)
		}
	}
}

func TestParseSeqSetRefusesWhatItDidNotWrite(t *testing.T) {
	for _, text := range []string{"", "12", "x;", "10;5", "10;11", "10;13,12", "10;13-12", "10;13,14", "10;13-15,15", "10;a-b"} {
		if c, err := ParseSeqSet(text); err == nil {
			t.Errorf("ParseSeqSet(%q) = %s, want an error", text, c)
		}
	}
}
