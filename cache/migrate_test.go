package cache

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/internal/s3test"
)

// migrateFrom fills a file: cache with an import and a log.
func migrateSource(t *testing.T) (*Cache, []string) {
	t.Helper()
	c := openCache(t, t.TempDir(), Options{})
	stream, err := os.ReadFile("testdata/multi-closure.export")
	if err != nil {
		t.Fatal(err)
	}
	paths, err := c.Import(context.Background(), strings.NewReader(string(stream)))
	if err != nil || len(paths) == 0 {
		t.Fatal(paths, err)
	}
	for _, p := range paths {
		if strings.HasSuffix(p, ".drv") {
			if err := c.WriteLog(context.Background(), p, strings.NewReader("log of "+p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return c, paths
}

// testMigrate copies src's cache to dst, interrupted once (a narinfo whose
// NAR is missing is left behind, and a corrupt NAR is refused), then
// resumed; the destination then serves every path as the source did.
func testMigrate(t *testing.T, src *Cache, paths []string, dst Store) {
	ctx := context.Background()
	// A NAR that does not hash to its name is never copied.
	bad := "nar/" + strings.Repeat("0", 52) + ".nar.zst"
	if err := putBytes(ctx, src.store, bad, []byte("not that")); err != nil {
		t.Fatal(err)
	}
	st, err := Migrate(ctx, src.store, dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Bad) != 1 || st.Bad[0] != bad || st.Copied == 0 {
		t.Fatalf("first run: %+v", st)
	}
	if _, err := dst.Stat(ctx, bad); !isNotExist(err) {
		t.Fatalf("corrupt NAR copied: %v", err)
	}
	src.store.Delete(ctx, bad)
	// Interrupted: one narinfo lost in the destination. Again copies only
	// that one.
	ni, err := src.Lookup(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := src.parsePath(paths[0])
	if err := dst.Delete(ctx, narinfoKey(sp.HashPart)); err != nil {
		t.Fatal(err)
	}
	st, err = Migrate(ctx, src.store, dst, nil)
	if err != nil || st.Copied != 1 || len(st.Bad) != 0 {
		t.Fatalf("resumed: %+v %v", st, err)
	}
	dc, err := OpenStore(ctx, dst, Options{NixKey: src.opts.NixKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		got, err := dc.Lookup(p)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := src.Lookup(p)
		if string(got.Bytes()) != string(want.Bytes()) {
			t.Fatalf("%s: narinfo differs", p)
		}
		if strings.HasSuffix(p, ".drv") {
			if _, err := dc.ReadDerivation(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := dst.Stat(ctx, ni.URL); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateFileToFile(t *testing.T) {
	src, paths := migrateSource(t)
	dst, err := NewFileStore(filepath.Join(t.TempDir(), "dst"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Clean(context.Background()); err != nil {
		t.Fatal(err)
	}
	testMigrate(t, src, paths, dst)
}

func TestMigrateFileToS3(t *testing.T) {
	srv := s3test.Start(t)
	src, paths := migrateSource(t)
	testMigrate(t, src, paths, openS3(t, srv, "migrated"))
}
