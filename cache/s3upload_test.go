package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/gbc-farm/gbc/internal/s3test"
)

// pattern is n bytes that differ from part to part (so a part sent twice
// or out of order shows).
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/(1<<20))
	}
	return b
}

// stream writes b to a new upload in SFTP-sized pieces and closes it.
func stream(t *testing.T, st *S3Store, b []byte, check func()) Upload {
	t.Helper()
	up, err := st.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(b); off += 252 << 10 {
		if _, err := up.Write(b[off:min(off+252<<10, len(b))]); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
		if check != nil {
			check()
		}
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
	return up
}

// leftovers lists what the store holds besides objects under keys: temp
// objects and incomplete multipart uploads.
func leftovers(t *testing.T, st *S3Store) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for oi := range st.cli.ListObjects(ctx, st.cfg.Bucket, minio.ListObjectsOptions{Prefix: st.prefix + tempDir, Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		out = append(out, "object "+oi.Key)
	}
	for up := range st.cli.ListIncompleteUploads(ctx, st.cfg.Bucket, st.prefix, true) {
		if up.Err != nil {
			t.Fatal(up.Err)
		}
		out = append(out, "upload "+up.Key)
	}
	return out
}

func readObject(t *testing.T, st *S3Store, key string) ([]byte, minio.ObjectInfo) {
	t.Helper()
	obj, _ := st.object(key)
	o, err := st.cli.GetObject(context.Background(), st.cfg.Bucket, obj, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	info, err := o.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return b, info
}

// Streamed uploads into a real bucket: small ones in one PUT from memory,
// large ones multipart through a temp object copied into place by the
// store (in one copy, or part by part past the copy limit), with the
// memory budget holding and parts spilling to disk past it; discarded
// and kept uploads leave nothing behind, and Clean removes what a crash
// would leave.
func TestS3StreamedUploads(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	st := openS3(t, srv, "farm")
	same := func(t *testing.T, key string, want []byte) minio.ObjectInfo {
		t.Helper()
		got, info := readObject(t, st, key)
		if sha256.Sum256(got) != sha256.Sum256(want) || len(got) != len(want) {
			t.Fatalf("%s: %d bytes, not the %d written", key, len(got), len(want))
		}
		return info
	}
	place := func(t *testing.T, up Upload, key string, keep bool) {
		t.Helper()
		if err := st.Sync(ctx, up); err != nil {
			t.Fatal(err)
		}
		if err := st.Place(ctx, Placement{Upload: up, Key: key, Keep: keep}); err != nil {
			t.Fatal(err)
		}
	}
	noLeftovers := func(t *testing.T) {
		t.Helper()
		if l := leftovers(t, st); len(l) > 0 {
			t.Fatalf("left behind: %v", l)
		}
		if st.Buffered() != 0 {
			t.Fatalf("%d bytes still buffered", st.Buffered())
		}
		ents, _ := os.ReadDir(st.cfg.SpoolDir)
		if len(ents) > 0 {
			t.Fatalf("spool dir holds %d files", len(ents))
		}
	}

	t.Run("small", func(t *testing.T) {
		b := pattern(3000)
		up := stream(t, st, b, nil)
		if u := up.(*s3Upload); u.uploadID != "" {
			t.Fatal("a 3000-byte upload started a multipart upload")
		}
		place(t, up, "small.narinfo", false)
		if info := same(t, "small.narinfo", b); info.ContentType != typeNarinfo {
			t.Fatalf("content type %q", info.ContentType)
		}
		noLeftovers(t)
	})

	t.Run("multipart", func(t *testing.T) {
		b := pattern(2*defaultStreamPart + 1<<20 + 17)
		up := stream(t, st, b, nil)
		if u := up.(*s3Upload); len(u.parts) != 3 || !u.completed {
			t.Fatalf("%d parts, completed %v", len(u.parts), u.completed)
		}
		place(t, up, "nar/big.nar.zst", false)
		info := same(t, "nar/big.nar.zst", b)
		if info.ContentType != typeNar || !strings.Contains(info.Metadata.Get("Cache-Control"), "immutable") {
			t.Fatalf("content type %q, cache control %q", info.ContentType, info.Metadata.Get("Cache-Control"))
		}
		noLeftovers(t)
	})

	t.Run("copy-in-parts", func(t *testing.T) {
		st.copyLimit = 6 << 20
		defer func() { st.copyLimit = maxCopy }()
		b := pattern(defaultStreamPart + 5<<20 + 3)
		place(t, stream(t, st, b, nil), "nar/parts.nar.xz", false)
		if info := same(t, "nar/parts.nar.xz", b); info.ContentType != typeNar {
			t.Fatalf("content type %q", info.ContentType)
		}
		noLeftovers(t)
	})

	t.Run("memory-budget", func(t *testing.T) {
		st.mem.limit = 6 << 20
		defer func() { st.mem.limit = DefaultMaxBufferBytes }()
		// Another upload holds most of the budget: this one spills its
		// part to disk, the other sends its part early.
		hog, _ := st.Create(ctx)
		if _, err := hog.Write(pattern(5 << 20)); err != nil {
			t.Fatal(err)
		}
		b := pattern(defaultStreamPart*2 + 123)
		spilt := false
		up := stream(t, st, b, func() {
			if st.Buffered() > st.mem.limit {
				t.Fatalf("%d bytes buffered, over the %d budget", st.Buffered(), st.mem.limit)
			}
			ents, _ := os.ReadDir(st.cfg.SpoolDir)
			spilt = spilt || len(ents) > 0
		})
		if !spilt {
			t.Fatal("no part went through the spool dir")
		}
		place(t, up, "nar/budget.nar", false)
		same(t, "nar/budget.nar", b)
		more := pattern(2 << 20)
		if _, err := hog.Write(more); err != nil {
			t.Fatal(err)
		}
		if err := hog.Close(); err != nil {
			t.Fatal(err)
		}
		place(t, hog, "nar/hog.nar", false)
		same(t, "nar/hog.nar", append(pattern(5<<20), more...))
		noLeftovers(t)
	})

	t.Run("discard", func(t *testing.T) {
		// In the middle of a multipart upload.
		up, _ := st.Create(ctx)
		if _, err := up.Write(pattern(defaultStreamPart + 10)); err != nil {
			t.Fatal(err)
		}
		if u := up.(*s3Upload); u.uploadID == "" {
			t.Fatal("no multipart upload started")
		}
		up.Discard()
		noLeftovers(t)
		// Completed, never placed.
		up = stream(t, st, pattern(defaultStreamPart+10), nil)
		up.Discard()
		noLeftovers(t)
	})

	t.Run("keep", func(t *testing.T) {
		first := pattern(defaultStreamPart + 99)
		place(t, stream(t, st, first, nil), "nar/kept.nar", false)
		second := bytes.Repeat([]byte{1}, defaultStreamPart+99)
		place(t, stream(t, st, second, nil), "nar/kept.nar", true)
		same(t, "nar/kept.nar", first)
		noLeftovers(t)
	})

	t.Run("clean", func(t *testing.T) {
		// What a crash leaves: a completed temp object and a multipart
		// upload in progress.
		done := stream(t, st, pattern(defaultStreamPart+1), nil).(*s3Upload)
		open, _ := st.Create(ctx)
		if _, err := open.Write(pattern(defaultStreamPart + 1)); err != nil {
			t.Fatal(err)
		}
		if l := leftovers(t, st); len(l) != 2 {
			t.Fatalf("want a temp object and an upload, have %v", l)
		}
		if err := st.Clean(ctx); err != nil {
			t.Fatal(err)
		}
		if l := leftovers(t, st); len(l) > 0 {
			t.Fatalf("after Clean: %v", l)
		}
		done.release()
		open.(*s3Upload).release()

		// An agent's direct upload stays while its result may come.
		obj := st.prefix + directDir + "agent-1/build-1/" + randomName()
		if _, err := st.cli.PutObject(ctx, st.cfg.Bucket, obj, bytes.NewReader([]byte("nar")), 3, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := st.Clean(ctx); err != nil {
			t.Fatal(err)
		}
		if l := leftovers(t, st); len(l) != 1 {
			t.Fatalf("a fresh direct upload was not kept: %v", l)
		}
		st.cfg.Now = func() time.Time { return time.Now().Add(DirectKeep + time.Hour) }
		defer func() { st.cfg.Now = time.Now }()
		if err := st.Clean(ctx); err != nil {
			t.Fatal(err)
		}
		if l := leftovers(t, st); len(l) > 0 {
			t.Fatalf("an old direct upload was kept: %v", l)
		}
	})
}
