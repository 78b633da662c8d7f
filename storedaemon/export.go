package storedaemon

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
)

// exportMagic follows the NAR in each export record ("NIXE").
const exportMagic = 0x4558494e

// ExportRecord is one path in an export stream (docs/formats.md §5), the input
// of ImportPaths.
type ExportRecord struct {
	Path       string
	References []string // full store paths
	Deriver    string   // "" if unknown
	NAR        io.Reader
}

// ExportSigner signs the SHA-256 of one record (from the start of its NAR
// through its deriver) and returns the signature text, for guix-daemon:
// the advanced-format s-expression of a signature by a key in the
// daemon's /etc/guix/acl (signing.GuixSecretKey.SignGuixHash).
type ExportSigner func(sum [sha256.Size]byte) ([]byte, error)

// WriteExport writes recs as an export stream, in order (dependencies
// first), each signed by sign, or unsigned when sign is nil (which Nix
// daemons accept from trusted clients and guix-daemon never does).
func WriteExport(w io.Writer, recs []ExportRecord, sign ExportSigner) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	out := &writer{w: bw}
	for _, rec := range recs {
		out.int(1)
		h := sha256.New()
		hashed := &writer{w: bufio.NewWriterSize(io.MultiWriter(bw, h), 64<<10)}
		if err := copyNAR(hashed, rec.NAR); err != nil {
			return fmt.Errorf("export %s: %w", rec.Path, err)
		}
		hashed.int(exportMagic)
		hashed.string(rec.Path)
		hashed.strings(rec.References)
		hashed.string(rec.Deriver)
		if err := hashed.flush(); err != nil {
			return fmt.Errorf("export %s: %w", rec.Path, err)
		}
		if sign == nil {
			out.int(0)
			continue
		}
		sig, err := sign(sum(h))
		if err != nil {
			return fmt.Errorf("export %s: sign: %w", rec.Path, err)
		}
		out.int(1)
		out.bytes(sig)
	}
	out.int(0)
	if err := out.flush(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

func copyNAR(w *writer, nar io.Reader) error {
	if w.err != nil {
		return w.err
	}
	if _, err := io.Copy(w.w, nar); err != nil {
		return fmt.Errorf("copy NAR: %w", err)
	}
	return nil
}

func sum(h hash.Hash) (s [sha256.Size]byte) {
	copy(s[:], h.Sum(nil))
	return s
}
