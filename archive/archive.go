// Package archive reads and writes the `nix-store --export` / `guix archive
// --export` stream (docs/formats.md §5): a sequence of records, each a NAR
// followed by the path's metadata and an optional signature. Guix signs the
// bytes from the start of the NAR through the deriver with its ECDSA key.
package archive

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
)

const exportMagic = 0x4558494e // "NIXE"

// Limits on record metadata.
const (
	MaxPathLen      = 4096
	MaxReferences   = 1 << 16
	MaxSignatureLen = 64 << 10
)

// Writer writes an export stream.
type Writer struct {
	w      io.Writer
	closed bool
	buf    [8]byte
}

// NewWriter returns a Writer to w. Call Close to write the end marker.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

func (w *Writer) int(dst io.Writer, v uint64) error {
	binary.LittleEndian.PutUint64(w.buf[:], v)
	_, err := dst.Write(w.buf[:])
	return err
}

func (w *Writer) str(dst io.Writer, s string) error {
	if err := w.int(dst, uint64(len(s))); err != nil {
		return err
	}
	if _, err := io.WriteString(dst, s); err != nil {
		return err
	}
	if pad := (8 - len(s)%8) % 8; pad > 0 {
		_, err := dst.Write(make([]byte, pad))
		return err
	}
	return nil
}

// WriteRecord writes one record. nar must hold exactly one NAR; its framing
// is checked while copying and trailing bytes are an error. A nil sig
// writes the "no signature" flag as Nix does; otherwise the string follows
// flag 1 (Guix's signature s-expression, or a legacy Nix string).
func (w *Writer) WriteRecord(nar io.Reader, path string, refs []string, deriver string, sig *string) error {
	_, err := w.writeRecord(nar, path, refs, deriver, func([sha256.Size]byte) (*string, error) { return sig, nil })
	return err
}

// WriteGuixRecord writes a record signed as guix archive --export signs it.
func (w *Writer) WriteGuixRecord(nar io.Reader, path string, refs []string, deriver string, key signing.GuixSecretKey) error {
	_, err := w.writeRecord(nar, path, refs, deriver, func(h [sha256.Size]byte) (*string, error) {
		s := string(key.SignGuixHash(h).Bytes())
		return &s, nil
	})
	return err
}

func (w *Writer) writeRecord(nar io.Reader, path string, refs []string, deriver string, sign func([sha256.Size]byte) (*string, error)) (nixhash.Hash, error) {
	if w.closed {
		return nixhash.Hash{}, errors.New("archive: write after Close")
	}
	if err := checkMeta(path, refs, deriver); err != nil {
		return nixhash.Hash{}, fmt.Errorf("archive: write record: %w", err)
	}
	if err := w.int(w.w, 1); err != nil {
		return nixhash.Hash{}, fmt.Errorf("archive: write record %s: %w", path, err)
	}
	signed := sha256.New()
	narHash := sha256.New()
	out := io.MultiWriter(w.w, signed)
	br := bufio.NewReader(nar)
	if _, err := io.Copy(io.MultiWriter(out, narHash), newNarScanner(br)); err != nil {
		return nixhash.Hash{}, fmt.Errorf("archive: write record %s: %w", path, err)
	}
	if _, err := br.Peek(1); err != io.EOF {
		return nixhash.Hash{}, fmt.Errorf("archive: write record %s: data after the NAR", path)
	}
	err := w.int(out, exportMagic)
	if err == nil {
		err = w.str(out, path)
	}
	if err == nil {
		err = w.int(out, uint64(len(refs)))
	}
	for _, r := range refs {
		if err == nil {
			err = w.str(out, r)
		}
	}
	if err == nil {
		err = w.str(out, deriver)
	}
	if err != nil {
		return nixhash.Hash{}, fmt.Errorf("archive: write record %s: %w", path, err)
	}
	var h [sha256.Size]byte
	signed.Sum(h[:0])
	sig, err := sign(h)
	if err != nil {
		return nixhash.Hash{}, err
	}
	if sig == nil {
		err = w.int(w.w, 0)
	} else {
		if len(*sig) > MaxSignatureLen {
			return nixhash.Hash{}, fmt.Errorf("archive: write record %s: signature of %d bytes exceeds limit", path, len(*sig))
		}
		err = w.int(w.w, 1)
		if err == nil {
			err = w.str(w.w, *sig)
		}
	}
	if err != nil {
		return nixhash.Hash{}, fmt.Errorf("archive: write record %s: %w", path, err)
	}
	var nh [sha256.Size]byte
	narHash.Sum(nh[:0])
	return nixhash.NewSHA256(nh), nil
}

// Close writes the end-of-stream marker; it does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if err := w.int(w.w, 0); err != nil {
		return fmt.Errorf("archive: write end marker: %w", err)
	}
	return nil
}

func checkMeta(path string, refs []string, deriver string) error {
	if path == "" || path[0] != '/' || len(path) > MaxPathLen {
		return fmt.Errorf("bad store path %q", path)
	}
	if len(refs) > MaxReferences {
		return fmt.Errorf("%d references exceed limit %d", len(refs), MaxReferences)
	}
	for _, r := range refs {
		if r == "" || r[0] != '/' || len(r) > MaxPathLen {
			return fmt.Errorf("bad reference %q", r)
		}
	}
	if len(deriver) > MaxPathLen || deriver != "" && deriver[0] != '/' {
		return fmt.Errorf("bad deriver %q", deriver)
	}
	return nil
}

// Reader reads an export stream record by record.
type Reader struct {
	br   *bufio.Reader
	off  int64
	cur  *Record
	err  error
	done bool
}

// NewReader returns a Reader for the stream in r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 64<<10)}
}

// Record is one path in the stream. NAR yields the archive bytes; once it
// has returned io.EOF (or after Finish), the metadata that follows the NAR
// in the stream is filled in.
type Record struct {
	NAR io.Reader

	Path       string
	References []string
	Deriver    string // "" when none
	Signature  *string

	NarHash nixhash.Hash
	NarSize int64
	// SignedHash is sha256 over the record from the NAR through the
	// deriver: what Guix signs.
	SignedHash [sha256.Size]byte

	r        *Reader
	scan     *narScanner
	narHash  hash.Hash
	signed   hash.Hash
	finished bool
	err      error
}

type recordNAR struct{ rec *Record }

func (n recordNAR) Read(p []byte) (int, error) {
	rec := n.rec
	if rec.finished {
		if rec.err != nil {
			return 0, rec.err
		}
		return 0, io.EOF
	}
	k, err := rec.scan.Read(p)
	if k > 0 {
		rec.narHash.Write(p[:k])
		rec.signed.Write(p[:k])
		rec.NarSize += int64(k)
		rec.r.off += int64(k)
		return k, nil
	}
	if err == io.EOF {
		if err := rec.readTrailer(); err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	rec.finished, rec.err = true, err
	rec.r.err = err
	return 0, err
}

// Next returns the next record, or io.EOF after the end marker. Any unread
// part of the previous record is read and discarded first.
func (r *Reader) Next() (*Record, error) {
	if r.cur != nil {
		if err := r.cur.Finish(); err != nil {
			return nil, err
		}
		r.cur = nil
	}
	if r.err != nil {
		return nil, r.err
	}
	if r.done {
		return nil, io.EOF
	}
	flag, err := r.int("record flag")
	if err != nil {
		return nil, err
	}
	switch flag {
	case 0:
		r.done = true
		return nil, io.EOF
	case 1:
	default:
		return nil, r.fail(r.off-8, "record flag %d, want 0 or 1", flag)
	}
	rec := &Record{r: r, scan: newNarScanner(r.br), narHash: sha256.New(), signed: sha256.New()}
	rec.NAR = recordNAR{rec}
	r.cur = rec
	return rec, nil
}

// Finish discards the rest of the NAR, if any, and reads the metadata.
func (rec *Record) Finish() error {
	if !rec.finished {
		if _, err := io.Copy(io.Discard, rec.NAR); err != nil {
			return err
		}
	}
	return rec.err
}

func (r *Reader) fail(off int64, format string, args ...any) error {
	r.err = fmt.Errorf("archive at offset %d: %s", off, fmt.Sprintf(format, args...))
	return r.err
}

func (r *Reader) readFull(b []byte, what string, h hash.Hash) error {
	n, err := io.ReadFull(r.br, b)
	if h != nil {
		h.Write(b[:n])
	}
	r.off += int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		r.err = fmt.Errorf("archive at offset %d: reading %s: %w", r.off, what, err)
		return r.err
	}
	return nil
}

func (r *Reader) intH(what string, h hash.Hash) (uint64, error) {
	var b [8]byte
	if err := r.readFull(b[:], what, h); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

func (r *Reader) int(what string) (uint64, error) { return r.intH(what, nil) }

func (r *Reader) strH(what string, max int, h hash.Hash) (string, error) {
	start := r.off
	n, err := r.intH(what+" length", h)
	if err != nil {
		return "", err
	}
	if n > uint64(max) {
		return "", r.fail(start, "%s of %d bytes exceeds limit %d", what, n, max)
	}
	b := make([]byte, int(n)+int((8-n%8)%8))
	if err := r.readFull(b, what, h); err != nil {
		return "", err
	}
	for _, c := range b[n:] {
		if c != 0 {
			return "", r.fail(r.off-int64(len(b)-int(n)), "non-zero padding after %s", what)
		}
	}
	return string(b[:n]), nil
}

func (rec *Record) readTrailer() error {
	rec.finished = true
	r := rec.r
	h := rec.signed
	err := func() error {
		start := r.off
		magic, err := r.intH("export magic", h)
		if err != nil {
			return err
		}
		if magic != exportMagic {
			return r.fail(start, "export magic %#x, want %#x", magic, exportMagic)
		}
		if rec.Path, err = r.strH("store path", MaxPathLen, h); err != nil {
			return err
		}
		start = r.off
		count, err := r.intH("reference count", h)
		if err != nil {
			return err
		}
		if count > MaxReferences {
			return r.fail(start, "%d references exceed limit %d", count, MaxReferences)
		}
		for i := uint64(0); i < count; i++ {
			ref, err := r.strH("reference", MaxPathLen, h)
			if err != nil {
				return err
			}
			rec.References = append(rec.References, ref)
		}
		if rec.Deriver, err = r.strH("deriver", MaxPathLen, h); err != nil {
			return err
		}
		if err := checkMeta(rec.Path, rec.References, rec.Deriver); err != nil {
			return r.fail(start, "record: %v", err)
		}
		h.Sum(rec.SignedHash[:0])
		start = r.off
		flag, err := r.int("signature flag")
		if err != nil {
			return err
		}
		switch flag {
		case 0:
		case 1:
			s, err := r.strH("signature", MaxSignatureLen, nil)
			if err != nil {
				return err
			}
			rec.Signature = &s
		default:
			return r.fail(start, "signature flag %d, want 0 or 1", flag)
		}
		var d [sha256.Size]byte
		rec.narHash.Sum(d[:0])
		rec.NarHash = nixhash.NewSHA256(d)
		return nil
	}()
	if err != nil {
		rec.err = err
		r.err = err
	}
	return err
}

// VerifyGuix checks the record's Guix signature against acl. Call it after
// the NAR has been read (or Finish).
func (rec *Record) VerifyGuix(acl *signing.ACL) error {
	if !rec.finished || rec.err != nil {
		return fmt.Errorf("archive: verify %s: record not completely read", rec.Path)
	}
	if rec.Signature == nil {
		return fmt.Errorf("archive: verify %s: record is not signed", rec.Path)
	}
	sig, err := signing.ParseGuixSignature([]byte(*rec.Signature))
	if err != nil {
		return fmt.Errorf("archive: verify %s: %w", rec.Path, err)
	}
	if err := signing.VerifyGuixHash(rec.SignedHash, sig, acl); err != nil {
		return fmt.Errorf("archive: verify %s: %w", rec.Path, err)
	}
	return nil
}
