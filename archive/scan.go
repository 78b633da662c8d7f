package archive

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// Limits for the NAR framing scan. Structural tokens are at most
// "nix-archive-1" (13 bytes); names and symlink targets are bounded like the
// nar package bounds them; file contents are streamed, not buffered.
const (
	maxToken     = 16
	maxDataField = 4096
	maxNarDepth  = 1024
)

// narScanner returns the raw bytes of exactly one NAR read from br, finding
// its end by following the token structure. It checks framing (lengths,
// zero padding, known tokens, balanced parentheses) but not the full
// grammar; callers wanting that run nar.NewReader over the bytes.
type narScanner struct {
	br      *bufio.Reader
	off     int64 // offset within the NAR, for errors
	pending []byte
	dataN   int64 // bytes of a data string still to pass through
	padN    int   // padding after the data string
	started bool
	depth   int
	done    bool
	// dataNext is set after "contents", "target" and "name": the next
	// string is payload, never interpreted as a token.
	dataNext bool
	dataKind string
	err      error
	buf      [8]byte
}

func newNarScanner(br *bufio.Reader) *narScanner { return &narScanner{br: br} }

func (s *narScanner) fail(format string, args ...any) error {
	s.err = fmt.Errorf("nar at offset %d: %s", s.off, fmt.Sprintf(format, args...))
	return s.err
}

func (s *narScanner) readFull(b []byte, what string) error {
	n, err := io.ReadFull(s.br, b)
	s.pending = append(s.pending, b[:n]...)
	s.off += int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		s.err = fmt.Errorf("nar at offset %d: reading %s: %w", s.off, what, err)
		return s.err
	}
	return nil
}

func (s *narScanner) Read(p []byte) (int, error) {
	for {
		if len(s.pending) > 0 {
			n := copy(p, s.pending)
			s.pending = s.pending[n:]
			if len(s.pending) == 0 {
				s.pending = s.pending[:0:0]
			}
			return n, nil
		}
		if s.err != nil {
			return 0, s.err
		}
		if s.dataN > 0 {
			if len(p) == 0 {
				return 0, nil
			}
			q := p
			if int64(len(q)) > s.dataN {
				q = q[:s.dataN]
			}
			n, err := s.br.Read(q)
			s.dataN -= int64(n)
			s.off += int64(n)
			if err == io.EOF && s.dataN > 0 {
				err = io.ErrUnexpectedEOF
			}
			if err != nil && err != io.EOF {
				s.err = fmt.Errorf("nar at offset %d: reading %s: %w", s.off, s.dataKind, err)
				if n > 0 {
					return n, nil
				}
				return 0, s.err
			}
			return n, nil
		}
		if s.padN > 0 {
			pad := s.buf[:s.padN]
			s.padN = 0
			if err := s.readFull(pad, "padding"); err != nil {
				return 0, err
			}
			if !bytes.Equal(pad, make([]byte, len(pad))) {
				return 0, s.fail("non-zero padding")
			}
			continue
		}
		if s.done {
			return 0, io.EOF
		}
		if err := s.step(); err != nil {
			return 0, err
		}
	}
}

// step reads the next string header and, for tokens, the token itself.
func (s *narScanner) step() error {
	if err := s.readFull(s.buf[:8], "string length"); err != nil {
		return err
	}
	n := binary.LittleEndian.Uint64(s.buf[:8])
	pad := int((8 - n%8) % 8)
	if s.dataNext {
		s.dataNext = false
		if s.dataKind != "contents" && n > maxDataField {
			return s.fail("%s of %d bytes exceeds limit %d", s.dataKind, n, maxDataField)
		}
		if n > 1<<62 {
			return s.fail("%s length %d is absurd", s.dataKind, n)
		}
		s.dataN, s.padN = int64(n), pad
		return nil
	}
	if n > maxToken {
		return s.fail("token of %d bytes where a NAR keyword was expected", n)
	}
	tok := make([]byte, int(n)+pad)
	if err := s.readFull(tok, "token"); err != nil {
		return err
	}
	if !bytes.Equal(tok[n:], make([]byte, pad)) {
		return s.fail("non-zero padding")
	}
	t := string(tok[:n])
	if !s.started {
		if t != "nix-archive-1" {
			return s.fail("bad magic %q", t)
		}
		s.started = true
		return nil
	}
	if s.depth == 0 && t != "(" {
		return s.fail("expected \"(\" after magic, got %q", t)
	}
	switch t {
	case "(":
		if s.depth >= maxNarDepth {
			return s.fail("nesting deeper than %d", maxNarDepth)
		}
		s.depth++
	case ")":
		s.depth--
		if s.depth == 0 {
			s.done = true
		}
	case "contents", "target", "name":
		s.dataNext, s.dataKind = true, t
	case "type", "regular", "executable", "", "symlink", "directory", "entry", "node":
	default:
		return s.fail("unknown token %q", t)
	}
	return nil
}
