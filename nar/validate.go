package nar

import (
	"fmt"
	"io"

	"github.com/gbc-farm/gbc/nixhash"
)

// Validate reads a whole NAR from r, checks its grammar strictly (see
// Reader) and that nothing follows it, and returns its SHA-256 and size.
func Validate(r io.Reader) (nixhash.Hash, int64, error) {
	hw := NewHashingWriter()
	nr := NewReader(io.TeeReader(r, hw))
	for {
		// Next skips (and checks the framing of) unread file contents.
		_, err := nr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nixhash.Hash{}, 0, err
		}
	}
	if err := nr.expectEOF(); err != nil {
		return nixhash.Hash{}, 0, err
	}
	if hw.Size() != nr.Offset() {
		return nixhash.Hash{}, 0, fmt.Errorf("nar validate: internal error: hashed %d bytes, parsed %d", hw.Size(), nr.Offset())
	}
	return hw.Sum(), hw.Size(), nil
}
