package nardiff

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzCompare compares arbitrary pairs of byte strings: it must never
// panic, a valid archive compared with itself has no difference, and two
// valid archives compare the same exactly when their bytes are equal (a
// NAR is canonical), in either order, with as many differences each way.
func FuzzCompare(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.nar")
	var nars [][]byte
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		nars = append(nars, b)
	}
	for _, a := range nars {
		for _, b := range nars {
			f.Add(a, b)
		}
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		o := Options{MaxDifferences: 8, MaxTextSize: 64}
		ab, err := Compare(bytes.NewReader(a), bytes.NewReader(b), o)
		if err != nil {
			return
		}
		if len(ab.Differences) > o.MaxDifferences {
			t.Fatalf("%d differences kept, limit %d", len(ab.Differences), o.MaxDifferences)
		}
		if ab.Same() != bytes.Equal(a, b) {
			t.Fatalf("Same() = %v for archives equal=%v: %+v", ab.Same(), bytes.Equal(a, b), ab.Differences)
		}
		ba, err := Compare(bytes.NewReader(b), bytes.NewReader(a), o)
		if err != nil {
			t.Fatalf("valid one way, not the other: %v", err)
		}
		if len(ab.Differences)+ab.Omitted != len(ba.Differences)+ba.Omitted {
			t.Fatalf("%d differences one way, %d the other", len(ab.Differences)+ab.Omitted, len(ba.Differences)+ba.Omitted)
		}
		if ab.LeftEntries != ba.RightEntries || ab.RightEntries != ba.LeftEntries {
			t.Fatalf("entry counts %d/%d vs %d/%d", ab.LeftEntries, ab.RightEntries, ba.LeftEntries, ba.RightEntries)
		}
		var w bytes.Buffer
		if err := ab.WriteText(&w, ""); err != nil {
			t.Fatal(err)
		}
	})
}
