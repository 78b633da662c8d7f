package storedaemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/gbc-farm/gbc/internal/text"
)

// Protocol constants (docs/formats.md §8; Nix worker-protocol.hh and Guix's
// nix/libstore/worker-protocol.hh).
const (
	workerMagic1 = 0x6e697863 // "cxin", client → daemon
	workerMagic2 = 0x6478696f // "oixd", daemon → client

	// NixClientVersion is the protocol this client speaks to Nix daemons:
	// 1.34, Nix 2.8's. Newer daemons negotiate down to it.
	NixClientVersion = 0x122
	// GuixClientVersion is the protocol this client speaks to
	// guix-daemon: 1.99 (0x163). guix-daemon 0x164 accepts it.
	GuixClientVersion = 0x163
	// guixMinor is the first minor version only guix-daemon uses; Nix's
	// minor versions stay far below it.
	guixMinor = 0x60
	// minNixMinor is the oldest Nix protocol this client speaks: 1.23
	// (framed AddToStoreNar, activities, the structured error format
	// from 1.26 is read when present).
	minNixMinor = 23
)

const (
	stderrNext          = 0x6f6c6d67
	stderrRead          = 0x64617461
	stderrWrite         = 0x64617416
	stderrLast          = 0x616c7473
	stderrError         = 0x63787470
	stderrStartActivity = 0x53545254
	stderrStopActivity  = 0x53544f50
	stderrResult        = 0x52534c54
)

// Result and activity types the client acts on (Nix's logging.hh).
const (
	resBuildLogLine = 101
)

// Dialect says which daemon family is on the other end.
type Dialect int

const (
	// Nix is nix-daemon (protocol 1.x with x < 0x60).
	Nix Dialect = iota
	// Guix is guix-daemon (protocol 1.0x63 and up).
	Guix
)

func (d Dialect) String() string {
	if d == Guix {
		return "guix"
	}
	return "nix"
}

// Error is a failure the daemon reported with STDERR_ERROR: the daemon
// understood the request and refused or failed it. The connection stays
// usable.
type Error struct {
	Op      string // the operation, e.g. "BuildPaths"
	Message string // the daemon's text, for humans only
	// Status is the exit status the daemon attached (Guix and Nix before
	// protocol 1.26; e.g. 100 build failed, 101 timed out); 0 if none.
	Status uint64
	Traces []string // Nix's error traces, innermost last
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("store daemon: %s: %s (status %d)", e.Op, e.Message, e.Status)
	}
	return fmt.Sprintf("store daemon: %s: %s", e.Op, e.Message)
}

// ConnError is a failure of the connection itself: I/O, a daemon that
// died or broke the protocol, or a canceled operation. The connection is
// closed and every later call fails with an error wrapping the same cause.
type ConnError struct {
	Op  string
	Err error
}

func (e *ConnError) Error() string {
	return fmt.Sprintf("store daemon connection: %s: %v", e.Op, e.Err)
}
func (e *ConnError) Unwrap() error { return e.Err }

// ErrUnsupported is wrapped by errors for operations the connected
// daemon's dialect or version does not have.
var ErrUnsupported = errors.New("not supported by this daemon")

// Conn is one connection to a store daemon, past the handshake. Its
// operations are serialised: one runs at a time. A Conn is safe for use
// by several goroutines.
type Conn struct {
	rwc     io.ReadWriteCloser
	r       reader
	w       writer
	dialect Dialect
	version uint64 // negotiated protocol version
	daemon  string // daemon version string (Nix ≥ 1.33), "" otherwise
	log     *slog.Logger

	mu sync.Mutex // held for a whole operation

	closeOnce sync.Once
	closeErr  error
	brokenMu  sync.Mutex
	broken    error // set once the connection is unusable
}

// Handshake performs the greeting on rwc (a socket, or a daemon's stdin
// and stdout) and returns the connection. It detects the dialect from the
// daemon's version. ctx bounds the handshake only; if it ends, rwc is
// closed. log may be nil.
func Handshake(ctx context.Context, rwc io.ReadWriteCloser, log *slog.Logger) (*Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Conn{rwc: rwc, log: log}
	c.r.r = bufio.NewReaderSize(rwc, 64<<10)
	c.w.w = bufio.NewWriterSize(rwc, 64<<10)
	stop := context.AfterFunc(ctx, func() { c.fail(&ConnError{Op: "handshake", Err: ctx.Err()}) })
	defer stop()
	if err := c.handshake(); err != nil {
		if ctx.Err() != nil {
			err = &ConnError{Op: "handshake", Err: ctx.Err()}
		}
		c.fail(err)
		return nil, err
	}
	return c, nil
}

func (c *Conn) handshake() error {
	const op = "handshake"
	c.w.int(workerMagic1)
	if err := c.w.flush(); err != nil {
		return &ConnError{Op: op, Err: fmt.Errorf("send magic: %w", err)}
	}
	magic, err := c.r.int("daemon magic")
	if err != nil {
		return &ConnError{Op: op, Err: err}
	}
	if magic != workerMagic2 {
		return &ConnError{Op: op, Err: fmt.Errorf("daemon magic is %#x, want %#x: not a store daemon", magic, workerMagic2)}
	}
	server, err := c.r.int("daemon protocol version")
	if err != nil {
		return &ConnError{Op: op, Err: err}
	}
	if server>>8 != 1 {
		return &ConnError{Op: op, Err: fmt.Errorf("daemon protocol version %#x: major version %d, want 1", server, server>>8)}
	}
	client := uint64(NixClientVersion)
	if server&0xff >= guixMinor {
		c.dialect = Guix
		client = GuixClientVersion
	}
	c.version = min(server, client)
	if c.dialect == Nix && c.minor() < minNixMinor {
		return &ConnError{Op: op, Err: fmt.Errorf("daemon protocol 1.%d is older than 1.%d: %w", c.minor(), minNixMinor, ErrUnsupported)}
	}
	c.w.int(client)
	c.w.int(0) // no CPU affinity (minor ≥ 14)
	c.w.int(0) // reserveSpace: false (minor ≥ 11)
	if err := c.w.flush(); err != nil {
		return &ConnError{Op: op, Err: fmt.Errorf("send client version: %w", err)}
	}
	if c.dialect == Nix && c.minor() >= 33 {
		v, err := c.r.string("daemon version")
		if err != nil {
			return &ConnError{Op: op, Err: err}
		}
		c.daemon = v
	}
	// Start-up messages, then LAST (or an error opening the store).
	return c.processStderr(op, nil, nil)
}

func (c *Conn) minor() uint64 { return c.version & 0xff }

// Dialect is the daemon family detected in the handshake.
func (c *Conn) Dialect() Dialect { return c.dialect }

// ProtocolVersion is the negotiated version, major<<8 | minor.
func (c *Conn) ProtocolVersion() uint64 { return c.version }

// DaemonVersion is the version the daemon announced (e.g. "2.8.0"); Guix
// and older Nix daemons announce none.
func (c *Conn) DaemonVersion() string { return c.daemon }

// Close closes the connection. A daemon ends whatever it was doing for
// this connection (including a build: the builder is killed) when it
// notices.
func (c *Conn) Close() error {
	c.fail(&ConnError{Op: "close", Err: ErrClosed})
	return c.closeErr
}

// ErrClosed is wrapped by the errors of operations on a closed connection.
var ErrClosed = errors.New("connection closed")

// Err returns why the connection is unusable, or nil while it is usable.
func (c *Conn) Err() error {
	c.brokenMu.Lock()
	defer c.brokenMu.Unlock()
	return c.broken
}

// fail marks the connection broken with err (first one wins) and closes it.
func (c *Conn) fail(err error) {
	c.brokenMu.Lock()
	if c.broken == nil {
		c.broken = err
	}
	c.brokenMu.Unlock()
	c.closeOnce.Do(func() { c.closeErr = c.rwc.Close() })
}

// do runs one operation: it writes op and its arguments with send,
// processes the daemon's stderr messages until LAST, then reads the reply
// with recv. log receives build output; source answers STDERR_READ.
// Canceling ctx closes the connection.
func (c *Conn) do(ctx context.Context, name string, op uint64, send func(w *writer), log io.Writer, source io.Reader, recv func(r *reader) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Err(); err != nil {
		return &ConnError{Op: name, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return &ConnError{Op: name, Err: err}
	}
	stop := context.AfterFunc(ctx, func() { c.fail(&ConnError{Op: name, Err: ctx.Err()}) })
	defer stop()
	err := c.exchange(name, op, send, log, source, recv)
	if err == nil {
		return nil
	}
	var de *Error
	if ctx.Err() != nil {
		// Whatever the daemon said last (e.g. "interrupted"), the
		// operation was canceled and the connection is gone.
		err = &ConnError{Op: name, Err: ctx.Err()}
	} else if errors.As(err, &de) {
		return err
	}
	var ce *ConnError
	if !errors.As(err, &ce) {
		err = &ConnError{Op: name, Err: err}
	}
	c.fail(err)
	return err
}

func (c *Conn) exchange(name string, op uint64, send func(w *writer), log io.Writer, source io.Reader, recv func(r *reader) error) error {
	c.w.int(op)
	if send != nil {
		send(&c.w)
	}
	if err := c.w.flush(); err != nil {
		return &ConnError{Op: name, Err: fmt.Errorf("send request: %w", err)}
	}
	if err := c.processStderr(name, log, source); err != nil {
		return err
	}
	if recv == nil {
		return nil
	}
	if err := recv(&c.r); err != nil {
		return &ConnError{Op: name, Err: fmt.Errorf("read reply: %w", err)}
	}
	return nil
}

// processStderr reads the daemon's messages until STDERR_LAST (nil) or
// STDERR_ERROR (*Error). Build output (STDERR_NEXT, and Nix's build-log
// results) goes to log when it is not nil.
func (c *Conn) processStderr(op string, log io.Writer, source io.Reader) error {
	for {
		code, err := c.r.int("stderr message")
		if err != nil {
			return &ConnError{Op: op, Err: err}
		}
		switch code {
		case stderrLast:
			return nil
		case stderrError:
			return c.readError(op)
		case stderrNext:
			b, err := c.r.bytes("log text", MaxLogChunk)
			if err != nil {
				return &ConnError{Op: op, Err: err}
			}
			if log != nil {
				log.Write(b) //nolint:errcheck // the log is best effort
			}
		case stderrWrite:
			// Only ExportPath and NarFromPath-like operations send data
			// this way; none of this client's operations expect it.
			if _, err := c.r.bytes("write data", MaxLogChunk); err != nil {
				return &ConnError{Op: op, Err: err}
			}
			return &ConnError{Op: op, Err: errors.New("daemon sent STDERR_WRITE data for an operation that takes none")}
		case stderrRead:
			n, err := c.r.int("read request size")
			if err != nil {
				return &ConnError{Op: op, Err: err}
			}
			if source == nil {
				return &ConnError{Op: op, Err: errors.New("daemon asked for data (STDERR_READ) for an operation that sends none")}
			}
			if err := c.answerRead(source, n); err != nil {
				return &ConnError{Op: op, Err: err}
			}
		case stderrStartActivity:
			if c.dialect != Nix {
				return &ConnError{Op: op, Err: fmt.Errorf("unknown stderr message %#x", code)}
			}
			if err := c.readStartActivity(); err != nil {
				return &ConnError{Op: op, Err: err}
			}
		case stderrStopActivity:
			if c.dialect != Nix {
				return &ConnError{Op: op, Err: fmt.Errorf("unknown stderr message %#x", code)}
			}
			if _, err := c.r.int("activity id"); err != nil {
				return &ConnError{Op: op, Err: err}
			}
		case stderrResult:
			if c.dialect != Nix {
				return &ConnError{Op: op, Err: fmt.Errorf("unknown stderr message %#x", code)}
			}
			if err := c.readResult(log); err != nil {
				return &ConnError{Op: op, Err: err}
			}
		default:
			return &ConnError{Op: op, Err: fmt.Errorf("unknown stderr message %#x", code)}
		}
	}
}

// answerRead sends up to n bytes from source, as one string.
func (c *Conn) answerRead(source io.Reader, n uint64) error {
	if n == 0 || n > MaxReadRequest {
		n = min(max(n, 1), MaxReadRequest)
	}
	buf := make([]byte, n)
	k, err := io.ReadFull(source, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return fmt.Errorf("read data the daemon asked for: %w", err)
	}
	c.w.bytes(buf[:k])
	return c.w.flush()
}

func (c *Conn) readError(op string) error {
	e := &Error{Op: op}
	if c.dialect == Nix && c.minor() >= 26 {
		typ, err := c.r.string("error type")
		if err != nil {
			return &ConnError{Op: op, Err: err}
		}
		if typ != "Error" {
			return &ConnError{Op: op, Err: fmt.Errorf("error type %q, want \"Error\"", text.Truncate(typ, 64))}
		}
		if _, err := c.r.int("error level"); err != nil {
			return &ConnError{Op: op, Err: err}
		}
		if _, err := c.r.string("error name"); err != nil {
			return &ConnError{Op: op, Err: err}
		}
		if e.Message, err = c.r.string("error message"); err != nil {
			return &ConnError{Op: op, Err: err}
		}
		e.Message = plain(e.Message)
		if err := c.noPos("error position"); err != nil {
			return &ConnError{Op: op, Err: err}
		}
		n, err := c.r.int("error trace count")
		if err != nil {
			return &ConnError{Op: op, Err: err}
		}
		if n > MaxList {
			return &ConnError{Op: op, Err: fmt.Errorf("%d error traces exceed the limit of %d", n, MaxList)}
		}
		for i := uint64(0); i < n; i++ {
			if err := c.noPos("trace position"); err != nil {
				return &ConnError{Op: op, Err: err}
			}
			t, err := c.r.string("error trace")
			if err != nil {
				return &ConnError{Op: op, Err: err}
			}
			e.Traces = append(e.Traces, plain(t))
		}
		return e
	}
	var err error
	if e.Message, err = c.r.string("error message"); err != nil {
		return &ConnError{Op: op, Err: err}
	}
	e.Message = plain(e.Message)
	if c.minor() >= 8 {
		if e.Status, err = c.r.int("error status"); err != nil {
			return &ConnError{Op: op, Err: err}
		}
	}
	return e
}

// noPos reads a havePos flag; Nix never sends positions to clients.
func (c *Conn) noPos(what string) error {
	v, err := c.r.int(what)
	if err != nil {
		return err
	}
	if v != 0 {
		return fmt.Errorf("%s flag is %d; positions are not part of the protocol this client speaks", what, v)
	}
	return nil
}

func (c *Conn) readStartActivity() error {
	if _, err := c.r.int("activity id"); err != nil {
		return err
	}
	if _, err := c.r.int("activity level"); err != nil {
		return err
	}
	if _, err := c.r.int("activity type"); err != nil {
		return err
	}
	if _, err := c.r.string("activity text"); err != nil {
		return err
	}
	if _, err := c.readFields(); err != nil {
		return err
	}
	_, err := c.r.int("activity parent")
	return err
}

func (c *Conn) readResult(log io.Writer) error {
	if _, err := c.r.int("result activity id"); err != nil {
		return err
	}
	typ, err := c.r.int("result type")
	if err != nil {
		return err
	}
	fields, err := c.readFields()
	if err != nil {
		return err
	}
	if typ == resBuildLogLine && log != nil && len(fields) > 0 {
		if s, ok := fields[0].(string); ok {
			log.Write(append([]byte(s), '\n')) //nolint:errcheck // best effort
		}
	}
	return nil
}

// readFields reads an activity's or result's fields: ints (uint64) and
// strings.
func (c *Conn) readFields() ([]any, error) {
	n, err := c.r.int("field count")
	if err != nil {
		return nil, err
	}
	if n > MaxList {
		return nil, fmt.Errorf("%d fields exceed the limit of %d", n, MaxList)
	}
	out := make([]any, 0, min(n, 16))
	total := 0
	for i := uint64(0); i < n; i++ {
		tag, err := c.r.int("field type")
		if err != nil {
			return nil, err
		}
		switch tag {
		case 0:
			v, err := c.r.int("int field")
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		case 1:
			s, err := c.r.bytes("string field", MaxLogChunk)
			if err != nil {
				return nil, err
			}
			if total += len(s); total > MaxLogChunk {
				return nil, fmt.Errorf("more than %d bytes of fields in one message", MaxLogChunk)
			}
			out = append(out, string(s))
		default:
			return nil, fmt.Errorf("field type %d, want 0 (int) or 1 (string)", tag)
		}
	}
	return out, nil
}

// plain drops the terminal escape sequences (ESC [ … final byte) Nix puts
// in its messages to colour them, so they read as text in logs and
// reports.
func plain(s string) string {
	if !strings.Contains(s, "\x1b[") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
