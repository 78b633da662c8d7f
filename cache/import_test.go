package cache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/gbc-farm/gbc/archive"
	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/nar"
)

func noTemps(t *testing.T, c *Cache) {
	t.Helper()
	if left := tempFiles(t, c); len(left) > 0 {
		t.Errorf("temp files left: %q", left)
	}
}

func narinfoCount(t *testing.T, c *Cache) int {
	m, _ := filepath.Glob(filepath.Join(c.Dir(), "*.narinfo"))
	return len(m)
}

func TestImportStreams(t *testing.T) {
	stream, err := os.ReadFile("testdata/multi-closure.export")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Run("whole", func(t *testing.T) {
		c := openCache(t, t.TempDir(), Options{})
		got, err := c.Import(ctx, bytes.NewReader(stream))
		if err != nil || len(got) != 2 {
			t.Fatalf("%v %v", got, err)
		}
		for _, p := range got {
			if !c.Has(p) {
				t.Errorf("%s not published", p)
			}
		}
		// Importing again is a no-op.
		if again, err := c.Import(ctx, bytes.NewReader(stream)); err != nil || len(again) != 2 {
			t.Fatalf("reimport %v %v", again, err)
		}
	})
	t.Run("truncated in second NAR", func(t *testing.T) {
		c := openCache(t, t.TempDir(), Options{})
		got, err := c.Import(ctx, bytes.NewReader(stream[:420]))
		if err == nil || len(got) != 1 || narinfoCount(t, c) != 1 {
			t.Fatalf("got %v, err %v, %d narinfos", got, err, narinfoCount(t, c))
		}
		noTemps(t, c)
	})
	t.Run("bad NAR grammar", func(t *testing.T) {
		bad := bytes.Replace(stream, []byte("regular"), []byte("regulaz"), 1)
		c := openCache(t, t.TempDir(), Options{})
		got, err := c.Import(ctx, bytes.NewReader(bad))
		if err == nil || len(got) != 0 || narinfoCount(t, c) != 0 {
			t.Fatalf("got %v, err %v", got, err)
		}
		noTemps(t, c)
	})
	t.Run("NAR over MaxNarSize", func(t *testing.T) {
		c := openCache(t, t.TempDir(), Options{MaxNarSize: 100})
		_, err := c.Import(ctx, bytes.NewReader(stream))
		if !errors.Is(err, errTooLarge) || narinfoCount(t, c) != 0 {
			t.Fatalf("err %v", err)
		}
		noTemps(t, c)
	})
	t.Run("other store", func(t *testing.T) {
		c := openCache(t, t.TempDir(), Options{StoreDir: "/gnu/store"})
		if _, err := c.Import(ctx, bytes.NewReader(stream)); err == nil || narinfoCount(t, c) != 0 {
			t.Fatalf("err %v", err)
		}
		noTemps(t, c)
	})
}

// A .drv record must hash to its path with its references, so an import
// cannot plant a derivation under another derivation's name.
func TestImportChecksDerivations(t *testing.T) {
	const drvPath = "/nix/store/fddm4k6zgckh82rck3n31awvwvh86p98-simple.drv"
	contents, err := os.ReadFile("testdata/fddm4k6zgckh82rck3n31awvwvh86p98-simple.drv")
	if err != nil {
		t.Fatal(err)
	}
	d, err := derivation.Parse(contents)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "x.drv")
	os.WriteFile(f, contents, 0o444)
	var narBuf bytes.Buffer
	if err := nar.Dump(&narBuf, f); err != nil {
		t.Fatal(err)
	}
	mk := func(path string, refs []string) []byte {
		var b bytes.Buffer
		w := archive.NewWriter(&b)
		if err := w.WriteRecord(bytes.NewReader(narBuf.Bytes()), path, refs, "", nil); err != nil {
			t.Fatal(err)
		}
		w.Close()
		return b.Bytes()
	}
	ctx := context.Background()
	tests := []struct {
		name string
		path string
		refs []string
		ok   bool
	}{
		{"genuine", drvPath, d.References(), true},
		{"other name", "/nix/store/fddm4k6zgckh82rck3n31awvwvh86p98-other.drv", d.References(), false},
		{"missing references", drvPath, nil, len(d.References()) == 0},
		{"extra reference", drvPath, append(d.References(), pathA), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openCache(t, t.TempDir(), Options{})
			_, err := c.Import(ctx, bytes.NewReader(mk(tt.path, tt.refs)))
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
			if c.Has(tt.path) != tt.ok {
				t.Fatalf("narinfo present=%v", c.Has(tt.path))
			}
		})
	}
}

func FuzzImport(f *testing.F) {
	seed, err := os.ReadFile("testdata/multi-closure.export")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:300])
	f.Add([]byte{})
	key := newKey(f, "fuzz-1")
	f.Fuzz(func(t *testing.T, b []byte) {
		c := openCache(t, t.TempDir(), Options{NixKey: key, MaxNarSize: 1 << 20})
		got, err := c.Import(context.Background(), bytes.NewReader(b))
		// Whatever happened, every narinfo belongs to a reported path and
		// points at a complete NAR.
		if n := narinfoCount(t, c); n > len(got) {
			t.Fatalf("%d narinfos for %d imported paths (err %v)", n, len(got), err)
		}
		for _, p := range got {
			ni, err := c.Lookup(p)
			if err != nil {
				t.Fatal(err)
			}
			if st, err := os.Stat(filepath.Join(c.Dir(), ni.URL)); err != nil || uint64(st.Size()) != ni.FileSize {
				t.Fatalf("NAR of %s: %v", p, err)
			}
		}
		noTemps(t, c)
	})
}
