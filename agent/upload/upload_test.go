package upload

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/nar"
	"github.com/pkg/sftp"
)

func TestPack(t *testing.T) {
	src := filepath.Join(t.TempDir(), "out")
	if err := os.MkdirAll(filepath.Join(src, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "bin", "hello"), []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("bin/hello", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out.nar.zst")
	p, err := Pack(context.Background(), src, dst, "zstd")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(f)) != p.FileSize {
		t.Fatalf("file size %d, reported %d", len(f), p.FileSize)
	}
	fh := nar.NewHashingWriter()
	fh.Write(f)
	if !fh.Sum().Equal(p.FileHash) {
		t.Fatalf("file hash %s, reported %s", fh.Sum(), p.FileHash)
	}
	r, err := compression.NewReader(bytes.NewReader(f), "zstd")
	if err != nil {
		t.Fatal(err)
	}
	h, n, err := nar.Validate(r)
	if err != nil {
		t.Fatal(err)
	}
	if !h.Equal(p.NarHash) || n != p.NarSize {
		t.Fatalf("NAR %s/%d, reported %s/%d", h, n, p.NarHash, p.NarSize)
	}
	if _, err := exec.LookPath("nix-hash"); err == nil {
		out, err := exec.Command("nix-hash", "--type", "sha256", "--base32", src).Output()
		if err != nil {
			t.Fatal(err)
		}
		if want := "sha256:" + strings.TrimSpace(string(out)); p.NarHash.String() != want {
			t.Fatalf("NAR hash %s, nix-hash says %s", p.NarHash, want)
		}
	}
	if ents, _ := os.ReadDir(filepath.Dir(dst)); len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

func TestPackMissingPath(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "x.nar.zst")
	if _, err := Pack(context.Background(), "/nonexistent/gbc-test", dst, "zstd"); err == nil {
		t.Fatal("no error for a missing path")
	}
	if _, err := os.Stat(dst); err == nil {
		t.Fatal("file left behind")
	}
}

// pipeServer runs an SFTP server on the real disk behind in-memory pipes.
// After limit bytes from the client (0: no limit) it cuts both pipes, as a
// dropped connection would.
type pipeServer struct {
	received atomic.Int64
	client   *sftp.Client
	done     chan struct{}
}

type countingReader struct {
	r     io.Reader
	n     *atomic.Int64
	limit int64
	cut   func()
	once  sync.Once
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n.Add(int64(n)) > c.limit && c.limit > 0 {
		c.once.Do(c.cut)
		return 0, io.ErrClosedPipe
	}
	return n, err
}

type rwc struct {
	io.Reader
	io.WriteCloser
}

func startPipeServer(t *testing.T, limit int64) *pipeServer {
	t.Helper()
	c2sR, c2sW := io.Pipe()
	s2cR, s2cW := io.Pipe()
	ps := &pipeServer{done: make(chan struct{})}
	cut := func() {
		c2sR.CloseWithError(io.ErrClosedPipe)
		s2cW.CloseWithError(io.ErrClosedPipe)
	}
	srv, err := sftp.NewServer(rwc{&countingReader{r: c2sR, n: &ps.received, limit: limit, cut: cut}, s2cW})
	if err != nil {
		t.Fatal(err)
	}
	go func() { srv.Serve(); close(ps.done) }()
	c, err := sftp.NewClientPipe(s2cR, c2sW, ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	ps.client = c
	t.Cleanup(func() { cut(); c.Close(); <-ps.done })
	return ps
}

func TestUploadResumes(t *testing.T) {
	// Large enough that the cut leaves more than the resume margin
	// (one window of writes) to skip.
	const size = 3*resumeMargin + 12345
	data := make([]byte, size)
	rand.Read(data)
	local := filepath.Join(t.TempDir(), "out.nar.zst")
	if err := os.WriteFile(local, data, 0o644); err != nil {
		t.Fatal(err)
	}
	remote := filepath.Join(t.TempDir(), "out.nar.zst")
	ctx := context.Background()

	cutAt := int64(2 * resumeMargin)
	first := startPipeServer(t, cutAt)
	if _, err := Upload(ctx, first.client, local, remote, nil); err == nil {
		t.Fatal("upload through a cut connection reported success")
	}
	// The server's workers may still be writing packets that arrived
	// before the cut; Serve returns only after they finish, so the size
	// read below is the one the second upload will see.
	<-first.done
	partial, err := os.Stat(remote)
	if err != nil {
		t.Fatal(err)
	}
	if partial.Size() == 0 || partial.Size() >= size {
		t.Fatalf("remote has %d bytes after the cut; the test needs a partial file", partial.Size())
	}

	second := startPipeServer(t, 0)
	st, err := Upload(ctx, second.client, local, remote, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(remote)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("remote file differs from local after resume")
	}
	if st.Skipped != ResumeOffset(partial.Size(), size) || st.Skipped == 0 || st.Sent != size-st.Skipped {
		t.Fatalf("stats %+v after a cut at %d bytes", st, partial.Size())
	}
	// Protocol overhead is small; the payload must be just the remainder.
	if rx := second.received.Load(); rx > size-st.Skipped+64<<10 {
		t.Fatalf("second connection carried %d bytes for a %d byte remainder", rx, size-st.Skipped)
	}
	t.Logf("cut after %d bytes, skipped %d, sent %d", partial.Size(), st.Skipped, st.Sent)
}

func TestUploadRestartsLongerRemote(t *testing.T) {
	local := filepath.Join(t.TempDir(), "f")
	os.WriteFile(local, []byte("short"), 0o644)
	remote := filepath.Join(t.TempDir(), "f")
	os.WriteFile(remote, []byte("something much longer than the local file"), 0o644)
	st, err := Upload(context.Background(), startPipeServer(t, 0).client, local, remote, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(remote); string(got) != "short" || st.Skipped != 0 || st.Sent != 5 {
		t.Fatalf("remote %q, stats %+v", got, st)
	}
}

func TestResumeOffset(t *testing.T) {
	tests := []struct{ remote, local, want int64 }{
		{0, 100, 0},
		{100, 50, 0},
		{resumeMargin + 10, 10 * resumeMargin, 10},
		{resumeMargin / 2, 10 * resumeMargin, 0},
	}
	for _, tt := range tests {
		if got := ResumeOffset(tt.remote, tt.local); got != tt.want {
			t.Errorf("ResumeOffset(%d, %d) = %d, want %d", tt.remote, tt.local, got, tt.want)
		}
	}
}
