package protocol

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sync"
)

// DefaultMaxLineBytes bounds one message; logs are chunked well below it.
const DefaultMaxLineBytes = 1 << 20

// ErrLineTooLong is returned (wrapped) for a line over the limit. The rest of
// that line is discarded, so the stream stays usable.
var ErrLineTooLong = errors.New("protocol line too long")

// UnknownTypeError is returned for a well-formed line of an unknown type.
type UnknownTypeError struct {
	Type string
	ID   uint64
}

func (e *UnknownTypeError) Error() string { return fmt.Sprintf("unknown message type %q", e.Type) }

// MalformedError is returned for a line that is not a valid message.
type MalformedError struct {
	ID  uint64 // the id, when it could be read
	Err error
}

func (e *MalformedError) Error() string { return "malformed message: " + e.Err.Error() }
func (e *MalformedError) Unwrap() error { return e.Err }

// Reader reads messages, one per line.
type Reader struct {
	r   *bufio.Reader
	max int
}

// NewReader reads lines of at most max bytes (DefaultMaxLineBytes if max <= 0).
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 {
		max = DefaultMaxLineBytes
	}
	return &Reader{r: bufio.NewReaderSize(r, 64*1024), max: max}
}

// Read returns the next message as a pointer to its concrete type
// (*Hello, *Build, ...). Errors of type *UnknownTypeError, *MalformedError
// and ErrLineTooLong leave the reader positioned at the next line; io.EOF
// and other read errors end the stream.
func (r *Reader) Read() (Message, error) {
	line, err := r.readLine()
	if err != nil {
		return nil, err
	}
	return Decode(line)
}

func (r *Reader) readLine() ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.r.ReadSlice('\n')
		if len(buf)+len(chunk) > r.max+1 { // +1 for the newline itself
			if err == nil {
				return nil, fmt.Errorf("%w: over %d bytes", ErrLineTooLong, r.max)
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				if derr := r.discardLine(); derr != nil {
					return nil, derr
				}
				return nil, fmt.Errorf("%w: over %d bytes", ErrLineTooLong, r.max)
			}
			return nil, err
		}
		buf = append(buf, chunk...)
		if err == nil {
			return bytes.TrimRight(buf, "\r\n"), nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(buf) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
}

func (r *Reader) discardLine() error {
	for {
		_, err := r.r.ReadSlice('\n')
		if err == nil {
			return nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
}

// Decode parses one line into its concrete message type.
func Decode(line []byte) (Message, error) {
	var h Header
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, &MalformedError{Err: err}
	}
	if h.Type == "" {
		return nil, &MalformedError{ID: h.ID, Err: errors.New(`missing "type"`)}
	}
	m := newMessage(h.Type)
	if m == nil {
		return nil, &UnknownTypeError{Type: h.Type, ID: h.ID}
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(m); err != nil {
		return nil, &MalformedError{ID: h.ID, Err: fmt.Errorf("%s: %w", h.Type, err)}
	}
	return m, nil
}

// IDOf returns the id carried by a decoded message.
func IDOf(m Message) uint64 {
	v := reflect.ValueOf(m)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if f := v.FieldByName("Header"); f.IsValid() {
		return f.Interface().(Header).ID
	}
	return 0
}

// Writer writes messages, one per line; it is safe for concurrent use.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	max int
}

// NewWriter writes lines of at most max bytes (DefaultMaxLineBytes if max <= 0).
func NewWriter(w io.Writer, max int) *Writer {
	if max <= 0 {
		max = DefaultMaxLineBytes
	}
	return &Writer{w: w, max: max}
}

// Write encodes m with its type set and writes it as one line.
func (w *Writer) Write(m Message) error {
	if v := reflect.ValueOf(m); v.Kind() != reflect.Pointer {
		p := reflect.New(v.Type())
		p.Elem().Set(v)
		m = p.Interface().(Message)
	}
	setType(m)
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", m.MessageType(), err)
	}
	if len(b) > w.max {
		return fmt.Errorf("encode %s: %w: %d bytes", m.MessageType(), ErrLineTooLong, len(b))
	}
	b = append(b, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.w.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", m.MessageType(), err)
	}
	return nil
}

func setType(m Message) {
	v := reflect.ValueOf(m)
	if f := v.Elem().FieldByName("Header"); f.IsValid() && f.CanSet() {
		h := f.Interface().(Header)
		h.Type = m.MessageType()
		f.Set(reflect.ValueOf(h))
	}
}
