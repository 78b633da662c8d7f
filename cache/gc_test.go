package cache

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/clock"
)

const pathC = "/nix/store/0hm2f1psjpcwg8fijsmr4wwxrx59s092-c"

func publish(t *testing.T, c *Cache, path, content string, refs ...string) Entry {
	t.Helper()
	e, file := fakeUpload(t, content)
	e.StorePath, e.References = path, refs
	if err := c.Publish(context.Background(), e, file); err != nil {
		t.Fatal(err)
	}
	return e
}

func hashOf(p string) string { return filepath.Base(p)[:32] }

// TestCollectionDeletesNarinfoThenNar: the narinfo goes first (the
// handler answers 404 at once), the NAR only when asked, and what is
// gone is reported with its URL.
func TestCollectionDeletesNarinfoThenNar(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, t.TempDir(), Options{})
	publish(t, c, pathA, "a\n")
	publish(t, c, pathB, "b\n", pathA)
	var seen []string
	if _, err := c.Scan(ctx, func(s Stored) error {
		seen = append(seen, s.Base)
		if s.Base == filepath.Base(pathB) && (len(s.References) != 1 || s.URL == "" || s.FileSize <= 0 || s.Published.IsZero()) {
			t.Errorf("scanned %+v", s)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(seen)
	if !slices.Equal(seen, []string{filepath.Base(pathA), filepath.Base(pathB)}) {
		t.Fatalf("scan: %v", seen)
	}
	x, err := c.BeginCollection()
	if err != nil {
		t.Fatal(err)
	}
	defer x.End()
	if _, err := c.BeginCollection(); !errors.Is(err, ErrCollecting) {
		t.Errorf("second collection: %v", err)
	}
	x.Touched()
	done, err := x.DeleteNarinfos(ctx, []string{filepath.Base(pathB)})
	if err != nil || len(done) != 1 {
		t.Fatalf("DeleteNarinfos: %v %v", done, err)
	}
	if c.Has(pathB) {
		t.Errorf("narinfo still there")
	}
	url := serve(t, c)
	if res, err := http.Get(url + "/" + hashOf(pathB) + ".narinfo"); err != nil || res.StatusCode != 404 {
		t.Errorf("GET deleted narinfo: %v %v", res.Status, err)
	}
	nar := filepath.Join(c.Dir(), filepath.FromSlash(done[0].URL))
	if _, err := os.Stat(nar); err != nil {
		t.Fatalf("NAR went with the narinfo: %v", err)
	}
	x.Touched() // the GET above touched pathB's hash part
	if ok, err := x.DeleteNar(done[0].URL); !ok || err != nil {
		t.Fatalf("DeleteNar: %v %v", ok, err)
	}
	if _, err := os.Stat(nar); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("NAR still there: %v", err)
	}
	if !c.Has(pathA) {
		t.Errorf("pathA went too")
	}
}

// TestCollectionFence: whatever a publication or a read relies on while
// a collection runs stops the deletions until the collection has looked,
// and is not deleted; a publication in flight when the collection began
// counts as touched.
func TestCollectionFence(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, t.TempDir(), Options{})
	publish(t, c, pathA, "a\n")
	publish(t, c, pathB, "b\n")
	leave := c.enter(hashOf(pathB))
	x, err := c.BeginCollection()
	if err != nil {
		t.Fatal(err)
	}
	defer x.End()
	leave()
	if got := x.Touched(); !slices.Equal(got, []string{hashOf(pathB)}) {
		t.Errorf("in flight at begin: %v", got)
	}
	e := publish(t, c, pathC, "c\n", pathA)
	if _, err := x.DeleteNarinfos(ctx, []string{filepath.Base(pathA)}); !errors.Is(err, ErrTouched) {
		t.Fatalf("delete after a publication: %v, want ErrTouched", err)
	}
	got := x.Touched()
	for _, k := range []string{hashOf(pathC), hashOf(pathA), narURL(e.FileHash, e.Compression)} {
		if !slices.Contains(got, k) {
			t.Errorf("touched %v lacks %s", got, k)
		}
	}
	done, err := x.DeleteNarinfos(ctx, []string{filepath.Base(pathA), filepath.Base(pathB), filepath.Base(pathC)})
	if err != nil || len(done) != 0 {
		t.Errorf("deleted touched paths: %v %v", done, err)
	}
	if ok, err := x.DeleteNar(narURL(e.FileHash, e.Compression)); ok || err != nil {
		t.Errorf("deleted a touched NAR: %v %v", ok, err)
	}
	c.Lookup(pathA)
	if _, err := x.DeleteNarinfos(ctx, nil); err != nil {
		t.Errorf("empty delete: %v", err)
	}
	x.End()
	// After the collection nothing is recorded.
	c.Lookup(pathA)
	y, err := c.BeginCollection()
	if err != nil {
		t.Fatal(err)
	}
	defer y.End()
	if got := y.Touched(); len(got) != 0 {
		t.Errorf("touched before the collection: %v", got)
	}
}

// TestAccessesBatched: narinfo fetches over HTTP are recorded in memory
// with the cache's clock, the latest per path, and handed over once.
func TestAccessesBatched(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	c := openCache(t, t.TempDir(), Options{Clock: clk})
	publish(t, c, pathA, "a\n")
	url := serve(t, c)
	get := func(p string) {
		res, err := http.Get(url + "/" + hashOf(p) + ".narinfo")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	get(pathA)
	clk.Advance(time.Minute)
	get(pathA)
	get(pathB) // 404: not recorded
	as, dropped := c.TakeAccesses()
	if len(as) != 1 || as[0].HashPart != hashOf(pathA) || !as[0].At.Equal(clk.Now()) || dropped != 0 {
		t.Errorf("accesses %+v dropped %d", as, dropped)
	}
	if as, _ := c.TakeAccesses(); len(as) != 0 {
		t.Errorf("taken twice: %+v", as)
	}
}

// TestOrphans: files no narinfo names are listed; only those written
// before the collection began may go.
func TestOrphans(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, t.TempDir(), Options{})
	old := filepath.Join(c.Dir(), "nar", "1111111111111111111111111111111111111111111111111111.nar.zst")
	young := filepath.Join(c.Dir(), "nar", "2222222222222222222222222222222222222222222222222222.nar.zst")
	oldLog := filepath.Join(c.Dir(), "log", filepath.Base(pathC)+".drv")
	for _, p := range []string{old, young, oldLog} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-time.Hour)
	os.Chtimes(old, past, past)
	os.Chtimes(oldLog, past, past)
	x, err := c.BeginCollection()
	if err != nil {
		t.Fatal(err)
	}
	defer x.End()
	os.Chtimes(young, time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	x.Touched()
	var files []File
	if err := c.Files(ctx, func(f File) error { files = append(files, f); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("files %+v", files)
	}
	removed := 0
	for _, f := range files {
		ok, err := x.DeleteOrphan(f)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			removed++
		}
	}
	if removed != 2 {
		t.Errorf("removed %d, want the old NAR and log", removed)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("young NAR removed: %v", err)
	}
}
