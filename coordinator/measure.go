package coordinator

import (
	"errors"
	"fmt"
	"io"

	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/storepath"
)

// measurer learns what an uploaded file is from its bytes, written to it
// in order: its SHA-256 and size, and — decompressed as it goes — whether
// it is one valid NAR, that NAR's hash and size, and (with a scanner) the
// store paths it contains. It is the one implementation both upload
// paths share: an upload read back from disk is copied into one, a
// streamed upload (ingest) writes into one as its bytes arrive, so the
// coordinator never needs the whole file in one place.
//
// Writes go synchronously through a pipe to a goroutine that decompresses
// and validates, so a Write returns once its bytes were checked as far
// as they can be; a NAR that is invalid or ends early makes the goroutine
// drain the rest (the file hash still covers every byte).
type measurer struct {
	file *nar.HashingWriter
	pw   *io.PipeWriter
	done chan struct{}
	scan *storepath.Scanner

	// Set by the goroutine before done closes.
	narHash nixhash.Hash
	narSize int64
	narErr  error
}

// measured is what a measurer found.
type measured struct {
	FileHash nixhash.Hash
	FileSize int64
	NarHash  nixhash.Hash
	NarSize  int64
	// NarErr says why the bytes are not one valid NAR in the compression
	// (nil when they are).
	NarErr error
}

// errMeasureAborted ends a measurer's goroutine when its upload is
// dropped.
var errMeasureAborted = errors.New("upload dropped")

// newMeasurer starts measuring a file compressed with comp (a
// compression name), feeding the NAR to scan when it is not nil.
func newMeasurer(comp string, scan *storepath.Scanner) *measurer {
	pr, pw := io.Pipe()
	m := &measurer{file: nar.NewHashingWriter(), pw: pw, done: make(chan struct{}), scan: scan}
	go m.run(pr, comp)
	return m
}

func (m *measurer) run(pr *io.PipeReader, comp string) {
	defer close(m.done)
	// Whatever the NAR's fate, read to the end so writers never block.
	defer io.Copy(io.Discard, pr)
	dec, err := compression.NewReader(pr, comp)
	if err != nil {
		m.narErr = fmt.Errorf("decompress (%s): %w", comp, err)
		return
	}
	defer dec.Close()
	var r io.Reader = dec
	if m.scan != nil {
		r = io.TeeReader(dec, m.scan)
	}
	m.narHash, m.narSize, m.narErr = nar.Validate(r)
}

// Write hashes p and passes it to the NAR check. It never fails before
// Finish or Abort: a bad NAR is reported by Finish.
func (m *measurer) Write(p []byte) (int, error) {
	m.file.Write(p)
	if _, err := m.pw.Write(p); err != nil {
		return 0, fmt.Errorf("measure upload: %w", err)
	}
	return len(p), nil
}

// Finish ends the file and returns what it is.
func (m *measurer) Finish() measured {
	m.pw.Close()
	<-m.done
	return measured{FileHash: m.file.Sum(), FileSize: m.file.Size(), NarHash: m.narHash, NarSize: m.narSize, NarErr: m.narErr}
}

// Abort stops the goroutine without a result.
func (m *measurer) Abort() {
	m.pw.CloseWithError(errMeasureAborted)
	<-m.done
}

// measureFrom measures everything r holds.
func measureFrom(r io.Reader, comp string, scan *storepath.Scanner) (measured, error) {
	m := newMeasurer(comp, scan)
	if _, err := io.Copy(m, r); err != nil {
		m.Abort()
		return measured{}, err
	}
	return m.Finish(), nil
}
