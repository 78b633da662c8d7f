// Package compression wraps the stream compressions used by Nix binary
// caches and Guix substitute servers behind one name-based API, so the
// cache code can say "zstd" or "xz" as a narinfo's Compression field does.
//
// Supported, read and write: "zstd" (default for new uploads), "xz",
// "gzip", "none". Read only: "bzip2" (Nix's historical default, decoded
// with the standard library, which has no encoder) and "lzip" (what Guix's
// `guix publish` serves besides zstd and gzip).
//
// lzip decision: no well-kept Go lzip library is available to us (none is
// in go.mod, none is widely used or maintained), and adding a dependency
// for a read-only path is not worth it. An lzip member is a 6-byte header,
// a raw LZMA stream with fixed properties (lc=3, lp=0, pb=2) ending in an
// end-of-stream marker, and a 20-byte trailer (CRC32, data size, member
// size); the LZMA decoding is done by ulikunitz/xz/lzma, already a
// dependency for xz, and this package only frames it and checks the
// trailer (see lzip.go). We do not write lzip: Nix never serves it and Guix
// clients accept zstd.
package compression

import (
	"compress/bzip2"
	"fmt"
	"io"
	"runtime"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Default is the compression for new NAR uploads: zstd decompresses far
// faster than xz at a similar ratio, and Nix ≥ 2.4 reads it.
const Default = "zstd"

// zstdLevel trades a little ratio for speed; SpeedDefault is zstd level 3,
// what `zstd` and Nix's own zstd sink use by default.
const zstdLevel = zstd.SpeedDefault

// zstdMaxWindow bounds decoder memory against hostile frames claiming a
// huge window; 128 MiB covers `zstd --long` archives up to --long=27.
const zstdMaxWindow = 128 << 20

var names = []string{"zstd", "xz", "gzip", "bzip2", "lzip", "none"}

// Names lists every compression this package can read, writable ones first.
func Names() []string { return append([]string(nil), names...) }

// Supported reports whether name can be read.
func Supported(name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// Writable reports whether NewWriter accepts name.
func Writable(name string) bool {
	switch name {
	case "zstd", "xz", "gzip", "none":
		return true
	}
	return false
}

// Suffix is the file name extension for name as used in cache URLs
// (nar/<filehash>.nar.zst, .nar.xz, .nar.bz2; ".nar" alone for none).
func Suffix(name string) string {
	switch name {
	case "zstd":
		return ".zst"
	case "xz":
		return ".xz"
	case "gzip":
		return ".gz"
	case "bzip2":
		return ".bz2"
	case "lzip":
		return ".lz"
	}
	return ""
}

// NewWriter returns a writer that compresses into w. Close flushes the
// compressor but does not close w.
func NewWriter(w io.Writer, name string) (io.WriteCloser, error) {
	switch name {
	case "zstd":
		// Concurrency is capped: uploads run several at once, and beyond a
		// few goroutines per stream zstd gains little.
		enc, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstdLevel),
			zstd.WithEncoderConcurrency(min(runtime.GOMAXPROCS(0), 4)))
		if err != nil {
			return nil, fmt.Errorf("compression: zstd writer: %w", err)
		}
		return enc, nil
	case "xz":
		xw, err := xz.NewWriter(w)
		if err != nil {
			return nil, fmt.Errorf("compression: xz writer: %w", err)
		}
		return xw, nil
	case "gzip":
		return gzip.NewWriter(w), nil
	case "none":
		return nopWriteCloser{w}, nil
	case "bzip2", "lzip":
		return nil, fmt.Errorf("compression: %q can be read but not written", name)
	}
	return nil, fmt.Errorf("compression: unknown compression %q", name)
}

// NewReader returns a reader that decompresses r. Close releases decoder
// resources but does not close r.
func NewReader(r io.Reader, name string) (io.ReadCloser, error) {
	switch name {
	case "zstd":
		dec, err := zstd.NewReader(r, zstd.WithDecoderMaxWindow(zstdMaxWindow),
			zstd.WithDecoderConcurrency(2))
		if err != nil {
			return nil, fmt.Errorf("compression: zstd reader: %w", err)
		}
		return zstdReadCloser{dec}, nil
	case "xz":
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("compression: xz reader: %w", err)
		}
		return io.NopCloser(xr), nil
	case "gzip":
		gr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("compression: gzip reader: %w", err)
		}
		return gr, nil
	case "bzip2":
		return io.NopCloser(bzip2.NewReader(r)), nil
	case "lzip":
		return newLzipReader(r), nil
	case "none":
		return io.NopCloser(r), nil
	}
	return nil, fmt.Errorf("compression: unknown compression %q", name)
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

type zstdReadCloser struct{ *zstd.Decoder }

func (z zstdReadCloser) Close() error { z.Decoder.Close(); return nil }
