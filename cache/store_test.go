package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testStore checks the Store contract on st, which must be empty: what
// Cache relies on from every backend.
func testStore(t *testing.T, st Store) {
	ctx := context.Background()
	put := func(key, body string, keep bool) error {
		t.Helper()
		up, err := st.Create(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(up, body); err != nil {
			t.Fatal(err)
		}
		if err := up.Close(); err != nil {
			t.Fatal(err)
		}
		if err := st.Sync(ctx, up); err != nil {
			t.Fatal(err)
		}
		return st.Place(ctx, Placement{Upload: up, Key: key, Keep: keep})
	}
	read := func(key string) string {
		t.Helper()
		o, err := st.Open(ctx, key)
		if err != nil {
			t.Fatalf("open %s: %v", key, err)
		}
		defer o.Close()
		b, err := io.ReadAll(o)
		if err != nil {
			t.Fatal(err)
		}
		if o.Info().Size != int64(len(b)) {
			t.Fatalf("%s: Info().Size %d, read %d bytes", key, o.Info().Size, len(b))
		}
		return string(b)
	}

	// An upload is invisible until placed; a discarded one never appears.
	up, err := st.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(up, "never")
	up.Close()
	up.Discard()
	up.Discard() // idempotent
	if _, err := st.Stat(ctx, "nar/never"); !isNotExist(err) {
		t.Fatalf("stat of a missing key: %v", err)
	}
	if _, err := st.Open(ctx, "nar/never"); !isNotExist(err) {
		t.Fatalf("open of a missing key: %v", err)
	}

	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	if err := put("nar/a.nar", big, true); err != nil {
		t.Fatal(err)
	}
	if err := put("abc.narinfo", "first", false); err != nil {
		t.Fatal(err)
	}
	// Keep leaves an existing object; otherwise the new one replaces it.
	if err := put("nar/a.nar", "other bytes", true); err != nil {
		t.Fatal(err)
	}
	if got := read("nar/a.nar"); got != big {
		t.Fatalf("Keep replaced the object: %d bytes", len(got))
	}
	if err := put("abc.narinfo", "second", false); err != nil {
		t.Fatal(err)
	}
	if got := read("abc.narinfo"); got != "second" {
		t.Fatalf("replaced object reads %q", got)
	}
	if err := put("log/x.drv", "log", false); err != nil {
		t.Fatal(err)
	}

	// Seek, as http.ServeContent does for a Range request.
	o, err := st.Open(ctx, "nar/a.nar")
	if err != nil {
		t.Fatal(err)
	}
	if end, err := o.Seek(0, io.SeekEnd); err != nil || end != int64(len(big)) {
		t.Fatalf("seek end: %d, %v", end, err)
	}
	if _, err := o.Seek(1<<19+3, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 20)
	if _, err := io.ReadFull(o, part); err != nil || string(part) != big[1<<19+3:1<<19+23] {
		t.Fatalf("read after seek: %q, %v", part, err)
	}
	o.Close()
	if info, err := st.Stat(ctx, "nar/a.nar"); err != nil || info.Size != int64(len(big)) || info.Key != "nar/a.nar" {
		t.Fatalf("stat: %+v, %v", info, err)
	}

	// List by prefix sees placed objects only.
	list := func(prefix string) []string {
		t.Helper()
		var keys []string
		if err := st.List(ctx, prefix, func(oi ObjectInfo) error {
			keys = append(keys, oi.Key)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		slices.Sort(keys)
		return keys
	}
	pending, _ := st.Create(ctx)
	io.WriteString(pending, "in progress")
	pending.Close()
	defer pending.Discard()
	if got := list("nar/"); !slices.Equal(got, []string{"nar/a.nar"}) {
		t.Fatalf("list nar/: %q", got)
	}
	if got := list("log/"); !slices.Equal(got, []string{"log/x.drv"}) {
		t.Fatalf("list log/: %q", got)
	}
	if got := list("nar/a"); !slices.Equal(got, []string{"nar/a.nar"}) {
		t.Fatalf("list nar/a: %q", got)
	}
	if got := list(""); !slices.Equal(got, []string{"abc.narinfo"}) {
		t.Fatalf("list: %q", got)
	}
	n := 0
	if err := st.List(ctx, "", func(ObjectInfo) error { n++; return ErrStopList }); err != nil || n != 1 {
		t.Fatalf("stopped list: %d calls, %v", n, err)
	}
	boom := errors.New("boom")
	if err := st.List(ctx, "", func(ObjectInfo) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("list error: %v", err)
	}

	// Adopt takes a local file over when placed, and leaves it when
	// discarded.
	dir := t.TempDir()
	src := filepath.Join(dir, "up.nar")
	os.WriteFile(src, []byte("adopted"), 0o644)
	ad, err := st.Adopt(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	ad.Discard()
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("discarding an adopted upload removed its file: %v", err)
	}
	ad, err = st.Adopt(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Sync(ctx, ad); err != nil {
		t.Fatal(err)
	}
	if err := st.Place(ctx, Placement{Upload: ad, Key: "nar/b.nar", Keep: true}); err != nil {
		t.Fatal(err)
	}
	if got := read("nar/b.nar"); got != "adopted" {
		t.Fatalf("adopted object reads %q", got)
	}
	if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("placed adopted file still there: %v", err)
	}

	// Delete; again is not-exist or nothing.
	if err := st.Delete(ctx, "nar/b.nar"); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "nar/b.nar"); err != nil && !isNotExist(err) {
		t.Fatal(err)
	}
	if _, err := st.Stat(ctx, "nar/b.nar"); !isNotExist(err) {
		t.Fatalf("deleted object: %v", err)
	}
	if err := st.Clean(ctx); err != nil {
		t.Fatal(err)
	}
	if got := read("abc.narinfo"); got != "second" {
		t.Fatalf("Clean touched an object: %q", got)
	}
	if !bytes.Equal([]byte(read("log/x.drv")), []byte("log")) {
		t.Fatal("log object changed")
	}
}

func TestFileStore(t *testing.T) {
	st, err := NewFileStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Clean(context.Background()); err != nil {
		t.Fatal(err)
	}
	testStore(t, st)
	// Keys that could leave the directory or name a temp file are not
	// there.
	for _, k := range []string{"../x", "/etc/passwd", "nar/../../x", "nar/" + tmpPrefix + "spool-0/x", "", "nar//a"} {
		if _, err := st.Open(context.Background(), k); !isNotExist(err) {
			t.Errorf("open %q: %v", k, err)
		}
	}
}

// A FIFO, a device or a symlink placed under the cache directory is not an
// object: opening it answers "not there" at once, never blocks, never
// follows the link.
func TestFileStoreSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	st, err := NewFileStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("not the cache's"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.narinfo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "link.narinfo")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "zero.narinfo")); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"fifo.narinfo", "link.narinfo", "zero.narinfo"} {
		done := make(chan error, 1)
		go func() {
			o, err := st.Open(context.Background(), k)
			if err == nil {
				o.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if !isNotExist(err) {
				t.Errorf("open %s: %v, want not there", k, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("open %s blocked", k)
		}
	}
}
