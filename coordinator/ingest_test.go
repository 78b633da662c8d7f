package coordinator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/internal/testagent"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/protocol"
)

func streaming(c *Config) { c.StreamUploads = true }

// bigContent is text that compresses poorly, so the upload takes many
// writes.
func bigContent(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		s := sha256.Sum256([]byte(fmt.Sprint(i)))
		fmt.Fprintf(&b, "%x\n", s)
	}
	return b.String()
}

// tempFiles lists the files a store upload in progress or dropped would
// leave in the cache directory.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), ".tmp-") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// chunks splits b into writes of n bytes, with their offsets.
func chunks(b []byte, n int) (offs []int64, parts [][]byte) {
	for off := 0; off < len(b); off += n {
		offs = append(offs, int64(off))
		parts = append(parts, b[off:min(off+n, len(b))])
	}
	return offs, parts
}

// A streamed upload: writes out of order and overlapping, as concurrent
// and resumed SFTP writes arrive, become one NAR in the cache, verified,
// with nothing written under the upload dir.
func TestStreamedUploadPublishes(t *testing.T) {
	h := newHarness(t)
	cc, _, _ := withCache(t, h, streaming)
	drv := h.realDrv("streamed")
	h.submit(0, drv)
	ag, _ := h.connect(h.newAgentID("x"), protocol.Hello{})
	bm := ag.next()
	file, out, err := testagent.Output(bm.Outputs[0], bigContent(3<<20))
	if err != nil {
		t.Fatal(err)
	}
	if len(file) < 1<<20 {
		t.Fatalf("a %d-byte upload is too small to test much", len(file))
	}
	ctx := context.Background()
	if !h.c.Streams(bm.Build) {
		t.Fatal("uploads of the build do not stream")
	}
	g, err := h.c.OpenIngest(ctx, ag.id, bm.Build, out.Upload, false)
	if err != nil {
		t.Fatal(err)
	}
	offs, parts := chunks(file, 64<<10)
	// The first half in order, the rest in reverse (each waits for the
	// one before it), then the first quarter again (a resume's overlap).
	order := []int{}
	for i := 0; i < len(parts)/2; i++ {
		order = append(order, i)
	}
	for i := len(parts) - 1; i >= len(parts)/2; i-- {
		order = append(order, i)
	}
	for i := 0; i < len(parts)/4; i++ {
		order = append(order, i)
	}
	for _, i := range order {
		if n, err := g.WriteAt(parts[i], offs[i]); err != nil || n != len(parts[i]) {
			t.Fatalf("write %d at %d: %d, %v", i, offs[i], n, err)
		}
		if i == len(parts)/2 && g.Size() != offs[i]+int64(len(parts[i])) && g.Size() != int64(len(file)) {
			t.Fatalf("size %d after the gap filled", g.Size())
		}
	}
	if g.Size() != int64(len(file)) {
		t.Fatalf("size %d, want %d", g.Size(), len(file))
	}
	if sizes := h.c.IngestSizes(ag.id, bm.Build); sizes[out.Upload] != int64(len(file)) || len(sizes) != 1 {
		t.Fatalf("IngestSizes %v", sizes)
	}
	ents, _ := os.ReadDir(h.c.UploadDir(ag.id, bm.Build))
	if len(ents) != 0 {
		t.Fatalf("upload dir holds %d files", len(ents))
	}
	if err := ag.succeed(bm, out); err != nil {
		t.Fatal(err)
	}
	ni, err := cc.Lookup(bm.Outputs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	if ni.NarHash.String() != out.NarHash || ni.FileSize != uint64(len(file)) {
		t.Fatalf("narinfo %+v", ni)
	}
	got, err := os.ReadFile(filepath.Join(cc.Dir(), ni.URL))
	if err != nil || !bytes.Equal(got, file) {
		t.Fatalf("NAR in the cache: %d bytes, %v", len(got), err)
	}
	if h.c.Ingest(ag.id, bm.Build, out.Upload) != nil {
		t.Fatal("ingest kept after the result")
	}
	if tf := tempFiles(t, cc.Dir()); len(tf) > 0 {
		t.Fatalf("temp files left: %v", tf)
	}
}

// What a streamed upload refuses, and that every refused or dropped one
// leaves nothing in the cache.
func TestStreamedUploadRefusals(t *testing.T) {
	h := newHarness(t)
	cc, _, _ := withCache(t, h, streaming)
	ctx := context.Background()
	ag, _ := h.connect(h.newAgentID("x"), protocol.Hello{MaxParallelBuilds: 4})
	next := func() (*protocol.Build, []byte, protocol.OutputResult, *Ingest) {
		t.Helper()
		h.submit(0, h.realDrv(fmt.Sprint("r", h.seq.Add(1))))
		bm := ag.next()
		file, out, err := testagent.Output(bm.Outputs[0], bigContent(1<<20))
		if err != nil {
			t.Fatal(err)
		}
		g, err := h.c.OpenIngest(ctx, ag.id, bm.Build, out.Upload, false)
		if err != nil {
			t.Fatal(err)
		}
		return bm, file, out, g
	}
	clean := func(what string, out protocol.OutputResult) {
		t.Helper()
		for i := 0; i < 100 && len(tempFiles(t, cc.Dir())) > 0; i++ {
			time.Sleep(20 * time.Millisecond) // the dropper runs apart
		}
		if tf := tempFiles(t, cc.Dir()); len(tf) > 0 {
			t.Fatalf("%s: temp files left: %v", what, tf)
		}
		fh, err := nixhash.Parse(out.FileHash)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(cc.Dir(), "nar", nixhash.Base32(fh.Digest)+".nar.zst")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s: the cache holds the upload (%v)", what, err)
		}
	}

	// Names no output uploads as, and builds not held.
	bm, file, out, g := next()
	if _, err := h.c.OpenIngest(ctx, ag.id, bm.Build, "other.nar.zst", false); !errors.Is(err, ErrUploadName) {
		t.Fatalf("bad name: %v", err)
	}
	if _, err := h.c.OpenIngest(ctx, "someone-else", bm.Build, out.Upload, false); !errors.Is(err, ErrNotYourBuild) {
		t.Fatalf("other agent: %v", err)
	}
	// Past the window, and truncation to anything but 0 or the size.
	if _, err := g.WriteAt([]byte("x"), ingestWindow+1); err == nil {
		t.Fatal("write past the window taken")
	}
	if err := g.Truncate(3); err == nil {
		t.Fatal("truncate to 3 of 0 bytes taken")
	}
	// Written, started over (truncate), written again: the result is the
	// second file's.
	if _, err := g.WriteAt(bytes.Repeat([]byte("junk"), 1000), 0); err != nil {
		t.Fatal(err)
	}
	if err := g.Truncate(0); err != nil || g.Size() != 0 {
		t.Fatalf("truncate: %v, size %d", err, g.Size())
	}
	// A report that does not match what arrived: refused, nothing kept.
	if _, err := g.WriteAt(file, 0); err != nil {
		t.Fatal(err)
	}
	bad := out
	bad.NarHash = nixhash.NewSHA256(sha256.Sum256([]byte("x"))).String()
	if err := ag.succeed(bm, bad); !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "NAR hash") {
		t.Fatalf("mismatch: %v", err)
	}
	if cc.Has(bm.Outputs[0].Path) {
		t.Fatal("mismatched upload published")
	}
	clean("mismatch", out)

	// Not a NAR at all.
	bm, _, out, g = next()
	if _, err := g.WriteAt([]byte("not a nar"), 0); err != nil {
		t.Fatal(err)
	}
	if err := ag.succeed(bm, out); !errors.Is(err, ErrVerification) {
		t.Fatalf("garbage: %v", err)
	}
	clean("garbage", out)

	// A gap at the report.
	bm, file, out, g = next()
	offs, parts := chunks(file, 64<<10)
	g.WriteAt(parts[0], offs[0])
	g.WriteAt(parts[2], offs[2])
	if err := ag.succeed(bm, out); !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "gap") {
		t.Fatalf("gap: %v", err)
	}
	clean("gap", out)

	// The build released (canceled) mid-upload: the upload is dropped and
	// later writes fail.
	bm, file, out, g = next()
	if _, err := g.WriteAt(file[:len(file)/2], 0); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Cancel(ctx, bm.Build); err != nil {
		t.Fatal(err)
	}
	if h.c.Ingest(ag.id, bm.Build, "out.nar.zst") != nil {
		t.Fatal("ingest kept after the cancel")
	}
	clean("cancel", out)
	if _, err := g.WriteAt(file[len(file)/2:], int64(len(file)/2)); !errors.Is(err, errIngestDropped) {
		t.Fatalf("write after the cancel: %v", err)
	}
}
