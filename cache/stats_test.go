package cache

import (
	"context"
	"path/filepath"
	"testing"
)

// TestStatsCount: a reopened cache knows nothing until Count has read the
// directory; from then on publications add and collections remove, and
// the figures match a fresh count.
func TestStatsCount(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := openCache(t, dir, Options{})
	a := publish(t, c, pathA, "a\n")
	if st := c.Stats(); st.Counted || st.Narinfos != 1 || st.NarBytes != a.FileSize {
		t.Fatalf("before Count: %+v, want uncounted, 1 narinfo of %d bytes", st, a.FileSize)
	}
	c = openCache(t, dir, Options{})
	if st := c.Stats(); st.Counted || st.Narinfos != 0 {
		t.Fatalf("reopened: %+v", st)
	}
	if err := c.Count(ctx); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); !st.Counted || st.Narinfos != 1 || st.NarBytes != a.FileSize {
		t.Fatalf("counted: %+v, want 1 narinfo of %d bytes", st, a.FileSize)
	}
	b := publish(t, c, pathB, "bb\n", pathA)
	publish(t, c, pathB, "bb\n", pathA) // again: no new narinfo
	if st := c.Stats(); st.Narinfos != 2 || st.NarBytes != a.FileSize+b.FileSize {
		t.Fatalf("after publishing B: %+v", st)
	}
	x, err := c.BeginCollection()
	if err != nil {
		t.Fatal(err)
	}
	x.Touched()
	if done, err := x.DeleteNarinfos(ctx, []string{filepath.Base(pathB)}); err != nil || len(done) != 1 {
		t.Fatalf("DeleteNarinfos: %v %v", done, err)
	}
	x.End()
	if st := c.Stats(); st.Narinfos != 1 || st.NarBytes != a.FileSize {
		t.Fatalf("after collecting B: %+v", st)
	}
	fresh := openCache(t, dir, Options{})
	if err := fresh.Count(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := fresh.Stats(), c.Stats(); got != want {
		t.Fatalf("a fresh count %+v differs from the kept one %+v", got, want)
	}
}
