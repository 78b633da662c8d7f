package nar

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// Reader reads a NAR node by node, like archive/tar: Next returns the next
// node's header and Read returns the contents of the current regular file.
// The grammar is checked strictly as it goes (magic, zero padding, sorted
// unique entry names, name syntax, known node types, length and depth
// bounds); any violation is an *Error naming the byte offset.
//
// Next returns io.EOF once the root node is complete. The Reader does not
// look past the end of the archive when given a *bufio.Reader (it uses that
// reader directly), so a NAR embedded in a longer stream can be followed by
// the stream's next field; Validate and Restore additionally require the
// input to end with the archive.
type Reader struct {
	r   *bufio.Reader
	off int64 // bytes consumed from r
	err error // sticky

	started bool
	stack   []dirFrame
	// pending describes the node returned by the last Next that still has
	// bytes to consume before the following header.
	pending   Type
	remaining int64 // unread contents of the current regular file
	size      int64
	path      string

	tok [maxTokenLen]byte
}

type dirFrame struct {
	path    string
	prev    string
	hasPrev bool
}

// NewReader returns a Reader for the archive in r.
func NewReader(r io.Reader) *Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, bufSize)
	}
	return &Reader{r: br}
}

// Offset returns how many archive bytes have been consumed.
func (r *Reader) Offset() int64 { return r.off }

func (r *Reader) fail(off int64, format string, args ...any) error {
	r.err = &Error{Offset: off, Path: r.path, Msg: fmt.Sprintf(format, args...)}
	return r.err
}

func (r *Reader) ioFail(off int64, what string, err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	r.err = &Error{Offset: off, Path: r.path, Msg: what, Err: err}
	return r.err
}

func (r *Reader) full(b []byte, what string) error {
	start := r.off
	n, err := io.ReadFull(r.r, b)
	r.off += int64(n)
	if err != nil {
		return r.ioFail(start, "truncated "+what, err)
	}
	return nil
}

func (r *Reader) readUint64(what string) (uint64, error) {
	var b [8]byte
	if err := r.full(b[:], what); err != nil {
		return 0, err
	}
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56, nil
}

func (r *Reader) padding(n uint64, what string) error {
	p := padLen(n)
	if p == 0 {
		return nil
	}
	var b [8]byte
	start := r.off
	if err := r.full(b[:p], what+" padding"); err != nil {
		return err
	}
	for i := range p {
		if b[i] != 0 {
			return r.fail(start+int64(i), "non-zero padding byte after %s", what)
		}
	}
	return nil
}

// readBytes reads one length-prefixed string of at most max bytes into buf
// (allocating only when buf is too small, which the bound keeps small).
func (r *Reader) readBytes(buf []byte, max int, what string) ([]byte, int64, error) {
	start := r.off
	n, err := r.readUint64(what + " length")
	if err != nil {
		return nil, start, err
	}
	if n > uint64(max) {
		return nil, start, r.fail(start, "%s length %d exceeds limit %d", what, n, max)
	}
	if uint64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if err := r.full(buf, what); err != nil {
		return nil, start, err
	}
	if err := r.padding(n, what); err != nil {
		return nil, start, err
	}
	return buf, start, nil
}

// token reads a grammar keyword without allocating.
func (r *Reader) token() (string, int64, error) {
	b, start, err := r.readBytes(r.tok[:0], maxTokenLen, "token")
	if err != nil {
		return "", start, err
	}
	return string(b), start, nil
}

func (r *Reader) expect(want string) error {
	start := r.off
	b, _, err := r.readBytes(r.tok[:0], maxTokenLen, fmt.Sprintf("token %q", want))
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Err == nil && want != "" {
			return r.fail(start, "expected %q, got an oversized token", want)
		}
		return err
	}
	if string(b) != want {
		return r.fail(start, "expected %q, got %q", want, b)
	}
	return nil
}

// Next advances to the next node and returns its header. Unread contents
// of the previous file are skipped (and their padding checked).
func (r *Reader) Next() (*Header, error) {
	if r.err != nil {
		return nil, r.err
	}
	if !r.started {
		r.started = true
		start := r.off
		b, _, err := r.readBytes(r.tok[:0], maxTokenLen, "magic")
		if err != nil {
			return nil, err
		}
		if string(b) != magic {
			return nil, r.fail(start, "bad magic %q, want %q", b, magic)
		}
		return r.node("/")
	}
	if err := r.finishLeaf(); err != nil {
		return nil, err
	}
	for {
		if len(r.stack) == 0 {
			r.err = io.EOF
			return nil, io.EOF
		}
		top := &r.stack[len(r.stack)-1]
		r.path = top.path
		tok, start, err := r.token()
		if err != nil {
			return nil, err
		}
		switch tok {
		case "entry":
			if err := r.expect("("); err != nil {
				return nil, err
			}
			if err := r.expect("name"); err != nil {
				return nil, err
			}
			nb, nameOff, err := r.readBytes(nil, MaxNameLen, "entry name")
			if err != nil {
				return nil, err
			}
			name := string(nb)
			if err := checkName(name); err != nil {
				return nil, r.fail(nameOff, "%v", err)
			}
			if top.hasPrev {
				if name == top.prev {
					return nil, r.fail(nameOff, "duplicate entry %q", name)
				}
				if name < top.prev {
					return nil, r.fail(nameOff, "entry %q not sorted after %q", name, top.prev)
				}
			}
			top.prev, top.hasPrev = name, true
			if err := r.expect("node"); err != nil {
				return nil, err
			}
			p := top.path + "/" + name
			if top.path == "/" {
				p = "/" + name
			}
			return r.node(p)
		case ")":
			r.stack = r.stack[:len(r.stack)-1]
			if err := r.closeEntry(); err != nil {
				return nil, err
			}
		default:
			return nil, r.fail(start, "expected \"entry\" or \")\" in directory, got %q", tok)
		}
	}
}

// closeEntry consumes the ")" that ends a directory entry, if the node just
// finished was one.
func (r *Reader) closeEntry() error {
	if len(r.stack) == 0 {
		return nil
	}
	return r.expect(")")
}

func (r *Reader) finishLeaf() error {
	switch r.pending {
	case TypeRegular, TypeExecutable:
		if r.remaining > 0 {
			start := r.off
			n, err := io.CopyN(io.Discard, r.r, r.remaining)
			r.off += n
			r.remaining -= n
			if err != nil {
				return r.ioFail(start, "truncated file contents", err)
			}
		}
		if err := r.padding(uint64(r.size), "file contents"); err != nil {
			return err
		}
	case TypeSymlink:
	default:
		return nil
	}
	r.pending = 0
	if err := r.expect(")"); err != nil {
		return err
	}
	return r.closeEntry()
}

func (r *Reader) node(path string) (*Header, error) {
	r.path = path
	if err := r.expect("("); err != nil {
		return nil, err
	}
	if err := r.expect("type"); err != nil {
		return nil, err
	}
	tok, start, err := r.token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case "regular":
		typ := TypeRegular
		tok, start, err := r.token()
		if err != nil {
			return nil, err
		}
		if tok == "executable" {
			if err := r.expect(""); err != nil {
				return nil, err
			}
			typ = TypeExecutable
			tok, start, err = r.token()
			if err != nil {
				return nil, err
			}
		}
		if tok != "contents" {
			return nil, r.fail(start, "expected \"contents\", got %q", tok)
		}
		sizeOff := r.off
		n, err := r.readUint64("file size")
		if err != nil {
			return nil, err
		}
		if n > math.MaxInt64-8 {
			return nil, r.fail(sizeOff, "file size %d too large", n)
		}
		r.pending, r.size, r.remaining = typ, int64(n), int64(n)
		return &Header{Path: path, Type: typ, Size: int64(n)}, nil
	case "symlink":
		if err := r.expect("target"); err != nil {
			return nil, err
		}
		tb, toff, err := r.readBytes(nil, MaxTargetLen, "symlink target")
		if err != nil {
			return nil, err
		}
		if len(tb) == 0 {
			return nil, r.fail(toff, "empty symlink target")
		}
		if bytes.IndexByte(tb, 0) >= 0 {
			return nil, r.fail(toff, "symlink target contains NUL")
		}
		r.pending = TypeSymlink
		return &Header{Path: path, Type: TypeSymlink, LinkTarget: string(tb)}, nil
	case "directory":
		if len(r.stack) >= MaxDepth {
			return nil, r.fail(start, "directory nesting deeper than %d", MaxDepth)
		}
		r.stack = append(r.stack, dirFrame{path: path})
		return &Header{Path: path, Type: TypeDirectory}, nil
	default:
		return nil, r.fail(start, "unknown node type %q", tok)
	}
}

func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty entry name")
	case name == "." || name == "..":
		return fmt.Errorf("entry name %q not allowed", name)
	case strings.IndexByte(name, '/') >= 0:
		return fmt.Errorf("entry name %q contains '/'", name)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("entry name %q contains NUL", name)
	}
	return nil
}

// Read reads the contents of the current regular file; it returns io.EOF at
// the end of the file (and (0, io.EOF) for other node types).
func (r *Reader) Read(p []byte) (int, error) {
	if r.pending != TypeRegular && r.pending != TypeExecutable {
		if r.err != nil && r.err != io.EOF {
			return 0, r.err
		}
		return 0, io.EOF
	}
	if r.remaining == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.remaining {
		p = p[:r.remaining]
	}
	start := r.off
	n, err := r.r.Read(p)
	r.off += int64(n)
	r.remaining -= int64(n)
	if err != nil {
		if err == io.EOF && r.remaining > 0 {
			return n, r.ioFail(start+int64(n), "truncated file contents", io.ErrUnexpectedEOF)
		}
		if err != io.EOF {
			return n, r.ioFail(start+int64(n), "read file contents", err)
		}
	}
	return n, nil
}

// expectEOF checks that nothing follows the archive.
func (r *Reader) expectEOF() error {
	var b [1]byte
	n, err := r.r.Read(b[:])
	if n > 0 {
		return &Error{Offset: r.off, Msg: "trailing data after archive"}
	}
	if err != nil && err != io.EOF {
		return &Error{Offset: r.off, Msg: "read after archive", Err: err}
	}
	if err == nil {
		// Read returned (0, nil); use a blocking peek to decide.
		if _, err := r.r.Peek(1); err == nil {
			return &Error{Offset: r.off, Msg: "trailing data after archive"}
		}
	}
	return nil
}
