package storedaemon

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// Bounds on what is read off the wire. A daemon that sends more is treated
// as broken: the connection is closed rather than memory allocated.
const (
	// MaxString bounds one string (paths, hashes, error messages, log
	// lines, signatures).
	MaxString = 1 << 20
	// MaxLogChunk bounds one STDERR_NEXT or STDERR_WRITE payload.
	MaxLogChunk = 4 << 20
	// MaxList bounds the number of strings in one list (references,
	// signatures, paths) and of fields, traces and outputs.
	MaxList = 1 << 16
	// MaxListBytes bounds the total size of the strings in one list.
	MaxListBytes = 16 << 20
	// MaxReadRequest bounds the data a daemon may ask for with
	// STDERR_READ in one request.
	MaxReadRequest = 1 << 20
)

// reader decodes the protocol's ints and strings (docs/formats.md §1) from a
// buffered stream, bounding every length.
type reader struct {
	r   *bufio.Reader
	buf [8]byte
}

func (r *reader) int(what string) (uint64, error) {
	if _, err := io.ReadFull(r.r, r.buf[:]); err != nil {
		return 0, fmt.Errorf("read %s: %w", what, eofIsUnexpected(err))
	}
	return binary.LittleEndian.Uint64(r.buf[:]), nil
}

func (r *reader) bool(what string) (bool, error) {
	v, err := r.int(what)
	if err != nil {
		return false, err
	}
	if v > 1 {
		return false, fmt.Errorf("read %s: boolean is %d, want 0 or 1", what, v)
	}
	return v == 1, nil
}

// bytes reads a string of at most max bytes, and its padding.
func (r *reader) bytes(what string, max int) ([]byte, error) {
	n, err := r.int(what + " length")
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("read %s: length %d exceeds the limit of %d bytes", what, n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.r, b); err != nil {
		return nil, fmt.Errorf("read %s: %w", what, eofIsUnexpected(err))
	}
	if err := r.padding(n, what); err != nil {
		return nil, err
	}
	return b, nil
}

func (r *reader) padding(n uint64, what string) error {
	pad := int((8 - n%8) % 8)
	if pad == 0 {
		return nil
	}
	if _, err := io.ReadFull(r.r, r.buf[:pad]); err != nil {
		return fmt.Errorf("read %s padding: %w", what, eofIsUnexpected(err))
	}
	for _, c := range r.buf[:pad] {
		if c != 0 {
			return fmt.Errorf("read %s: non-zero padding", what)
		}
	}
	return nil
}

func (r *reader) string(what string) (string, error) {
	b, err := r.bytes(what, MaxString)
	return string(b), err
}

func (r *reader) strings(what string) ([]string, error) {
	n, err := r.int(what + " count")
	if err != nil {
		return nil, err
	}
	if n > MaxList {
		return nil, fmt.Errorf("read %s: %d entries exceed the limit of %d", what, n, MaxList)
	}
	out := make([]string, 0, min(n, 64))
	total := 0
	for i := uint64(0); i < n; i++ {
		s, err := r.string(what)
		if err != nil {
			return nil, err
		}
		if total += len(s); total > MaxListBytes {
			return nil, fmt.Errorf("read %s: more than %d bytes in one list", what, MaxListBytes)
		}
		out = append(out, s)
	}
	return out, nil
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// writer encodes ints and strings onto a buffered stream. Errors stick:
// after the first failure every call is a no-op and err reports it.
type writer struct {
	w   *bufio.Writer
	buf [8]byte
	err error
}

var zeros [8]byte

func (w *writer) int(v uint64) {
	if w.err != nil {
		return
	}
	binary.LittleEndian.PutUint64(w.buf[:], v)
	_, w.err = w.w.Write(w.buf[:])
}

func (w *writer) bool(v bool) {
	if v {
		w.int(1)
	} else {
		w.int(0)
	}
}

func (w *writer) bytes(b []byte) {
	w.int(uint64(len(b)))
	if w.err != nil {
		return
	}
	if _, w.err = w.w.Write(b); w.err != nil {
		return
	}
	if pad := (8 - len(b)%8) % 8; pad > 0 {
		_, w.err = w.w.Write(zeros[:pad])
	}
}

func (w *writer) string(s string) {
	w.int(uint64(len(s)))
	if w.err != nil {
		return
	}
	if _, w.err = w.w.WriteString(s); w.err != nil {
		return
	}
	if pad := (8 - len(s)%8) % 8; pad > 0 {
		_, w.err = w.w.Write(zeros[:pad])
	}
}

func (w *writer) strings(ss []string) {
	w.int(uint64(len(ss)))
	for _, s := range ss {
		w.string(s)
	}
}

func (w *writer) flush() error {
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}
