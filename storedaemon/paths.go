package storedaemon

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/nixhash"
)

// IsValidPath reports whether path is valid in the store.
func (c *Conn) IsValidPath(ctx context.Context, path string) (bool, error) {
	var valid bool
	err := c.do(ctx, "IsValidPath "+path, opIsValidPath, func(w *writer) { w.string(path) }, nil, nil,
		func(r *reader) (err error) { valid, err = r.bool("validity"); return err })
	return valid, err
}

// QueryValidPaths returns those of paths that are valid, without
// substituting any.
func (c *Conn) QueryValidPaths(ctx context.Context, paths []string) ([]string, error) {
	var valid []string
	err := c.do(ctx, "QueryValidPaths", opQueryValidPaths, func(w *writer) {
		w.strings(paths)
		if c.dialect == Nix && c.minor() >= 27 {
			w.bool(false) // do not substitute
		}
	}, nil, nil, func(r *reader) (err error) { valid, err = r.strings("valid paths"); return err })
	return valid, err
}

// PathInfo is what the daemon knows about a valid path.
type PathInfo struct {
	Path             string
	Deriver          string // "" if unknown
	NarHash          nixhash.Hash
	References       []string // full store paths
	RegistrationTime time.Time
	NarSize          uint64
	// Nix only:
	Ultimate bool     // built locally, trusted without signatures
	Sigs     []string // "keyname:base64"
	CA       string   // content address, "" for input-addressed paths
}

// QueryPathInfo returns the path's information, or nil if it is not valid.
// On guix-daemon, which answers an invalid path with an error, validity is
// asked first.
func (c *Conn) QueryPathInfo(ctx context.Context, path string) (*PathInfo, error) {
	if c.dialect == Guix {
		ok, err := c.IsValidPath(ctx, path)
		if err != nil || !ok {
			return nil, err
		}
	}
	var info *PathInfo
	err := c.do(ctx, "QueryPathInfo "+path, opQueryPathInfo, func(w *writer) { w.string(path) }, nil, nil,
		func(r *reader) error {
			if c.dialect == Nix {
				valid, err := r.bool("validity")
				if err != nil || !valid {
					return err
				}
			}
			i, err := c.readPathInfo(r, path)
			info = i
			return err
		})
	return info, err
}

func (c *Conn) readPathInfo(r *reader, path string) (*PathInfo, error) {
	i := &PathInfo{Path: path}
	var err error
	if i.Deriver, err = r.string("deriver"); err != nil {
		return nil, err
	}
	h, err := r.string("NAR hash")
	if err != nil {
		return nil, err
	}
	d, err := hex.DecodeString(h)
	if err != nil || len(d) != 32 {
		return nil, fmt.Errorf("NAR hash %q is not a hex SHA-256", text.Truncate(h, 64))
	}
	i.NarHash = nixhash.Hash{Algo: nixhash.SHA256, Digest: d}
	if i.References, err = r.strings("references"); err != nil {
		return nil, err
	}
	t, err := r.int("registration time")
	if err != nil {
		return nil, err
	}
	i.RegistrationTime = time.Unix(int64(min(t, math.MaxInt64)), 0)
	if i.NarSize, err = r.int("NAR size"); err != nil {
		return nil, err
	}
	if c.dialect == Guix {
		return i, nil
	}
	if i.Ultimate, err = r.bool("ultimate"); err != nil {
		return nil, err
	}
	if i.Sigs, err = r.strings("signatures"); err != nil {
		return nil, err
	}
	if i.CA, err = r.string("content address"); err != nil {
		return nil, err
	}
	return i, nil
}

// AddTempRoot keeps path from being garbage-collected while this
// connection is open.
func (c *Conn) AddTempRoot(ctx context.Context, path string) error {
	return c.do(ctx, "AddTempRoot "+path, opAddTempRoot, func(w *writer) { w.string(path) }, nil, nil, readAck)
}

// AddIndirectRoot registers link, a symlink to a store path outside the
// store, as a garbage collector root for as long as link exists.
func (c *Conn) AddIndirectRoot(ctx context.Context, link string) error {
	return c.do(ctx, "AddIndirectRoot "+link, opAddIndirectRoot, func(w *writer) { w.string(link) }, nil, nil, readAck)
}

// AddTextToStore adds a text file (e.g. a .drv) with the given references
// and returns its store path.
func (c *Conn) AddTextToStore(ctx context.Context, name string, text []byte, refs []string) (string, error) {
	var path string
	err := c.do(ctx, "AddTextToStore "+name, opAddTextToStore, func(w *writer) {
		w.string(name)
		w.bytes(text)
		w.strings(refs)
	}, nil, nil, func(r *reader) (err error) { path, err = r.string("store path"); return err })
	return path, err
}

// AddToStoreNar imports one path from its NAR (Nix only). info must
// carry the path, NAR hash and size, references, deriver and signatures;
// the daemon checks the NAR against hash and size, and the signatures
// against its trusted keys unless dontCheckSigs is set (which only a
// trusted client may do).
func (c *Conn) AddToStoreNar(ctx context.Context, info *PathInfo, nar io.Reader, dontCheckSigs bool) error {
	op := "AddToStoreNar " + info.Path
	if c.dialect != Nix {
		return fmt.Errorf("%s: %w (guix-daemon imports with ImportPaths)", op, ErrUnsupported)
	}
	if info.NarHash.Algo != nixhash.SHA256 || len(info.NarHash.Digest) != 32 {
		return fmt.Errorf("%s: NAR hash must be SHA-256", op)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Err(); err != nil {
		return &ConnError{Op: op, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return &ConnError{Op: op, Err: err}
	}
	stop := context.AfterFunc(ctx, func() { c.fail(&ConnError{Op: op, Err: ctx.Err()}) })
	defer stop()

	w := &c.w
	w.int(opAddToStoreNar)
	w.string(info.Path)
	w.string(info.Deriver)
	w.string(hex.EncodeToString(info.NarHash.Digest))
	w.strings(info.References)
	w.int(uint64(max(info.RegistrationTime.Unix(), 0)))
	w.int(info.NarSize)
	w.bool(info.Ultimate)
	w.strings(info.Sigs)
	w.string(info.CA)
	w.bool(false) // repair
	w.bool(dontCheckSigs)
	if err := w.flush(); err != nil {
		err = &ConnError{Op: op, Err: fmt.Errorf("send request: %w", err)}
		c.fail(err)
		return err
	}
	// The NAR goes as frames while the daemon may already talk back, so
	// it is sent from another goroutine.
	sent := make(chan error, 1)
	go func() {
		err := c.sendFramed(nar)
		if err != nil {
			// The daemon waits for the rest of the NAR: only closing the
			// connection ends the operation.
			c.fail(&ConnError{Op: op, Err: err})
		}
		sent <- err
	}()
	err := c.processStderr(op, nil, nil)
	serr := <-sent
	if err == nil && serr != nil {
		err = &ConnError{Op: op, Err: serr}
	}
	if err == nil {
		return nil
	}
	var de *Error
	if ctx.Err() == nil && errors.As(err, &de) {
		if serr != nil {
			// The daemon refused before reading the whole NAR: the rest
			// of our frames are still in its input.
			c.fail(&ConnError{Op: op, Err: serr})
		}
		return err
	}
	if ctx.Err() != nil {
		err = &ConnError{Op: op, Err: ctx.Err()}
	}
	c.fail(err)
	return err
}

// sendFramed writes r as Nix's framed stream: (length, bytes)… then 0.
func (c *Conn) sendFramed(r io.Reader) error {
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			c.w.int(uint64(n))
			if c.w.err == nil {
				_, c.w.err = c.w.w.Write(buf[:n])
			}
			if c.w.err != nil {
				return fmt.Errorf("send NAR: %w", c.w.err)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read NAR: %w", err)
		}
	}
	c.w.int(0)
	if err := c.w.flush(); err != nil {
		return fmt.Errorf("send NAR: %w", err)
	}
	return nil
}

// ImportPaths imports an export stream (docs/formats.md §5, see
// ExportWriter) and returns the imported paths. guix-daemon requires
// every record to be signed by a key in its ACL (/etc/guix/acl); Nix
// daemons accept it from trusted clients.
func (c *Conn) ImportPaths(ctx context.Context, stream io.Reader) ([]string, error) {
	var paths []string
	err := c.do(ctx, "ImportPaths", opImportPaths, nil, nil, stream,
		func(r *reader) (err error) { paths, err = r.strings("imported paths"); return err })
	return paths, err
}

// DeletePath deletes path from the store if nothing keeps it alive. The
// daemon refuses (an *Error) when it is alive, e.g. referenced or rooted.
func (c *Conn) DeletePath(ctx context.Context, path string) error {
	var deleted []string
	err := c.do(ctx, "DeletePath "+path, opCollectGarbage, func(w *writer) {
		w.int(gcDeleteSpecific)
		w.strings([]string{path})
		w.bool(false)         // ignoreLiveness
		w.int(math.MaxUint64) // maxFreed: no limit
		w.int(0)              // obsolete
		w.int(0)              // obsolete
		w.int(0)              // obsolete
	}, nil, nil, func(r *reader) error {
		var err error
		if deleted, err = r.strings("deleted paths"); err != nil {
			return err
		}
		if _, err := r.int("bytes freed"); err != nil {
			return err
		}
		_, err = r.int("obsolete")
		return err
	})
	if err != nil {
		return err
	}
	for _, p := range deleted {
		if p == path {
			return nil
		}
	}
	return &Error{Op: "DeletePath " + path, Message: "the daemon did not delete the path"}
}
