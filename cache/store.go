package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"
)

// Store is where a Cache keeps its objects: the one storage backend
// interface, implemented by a directory (FileStore, `file:DIR`) and an
// S3-compatible bucket. Keys are slash-separated and relative, the same
// in every backend: "nix-cache-info", "<hashpart>.narinfo",
// "nar/<filehash>.nar<suffix>", "log/<drv basename>".
//
// Writing an object takes three steps, so that a Cache can keep its
// invariant (a narinfo appears only after its NAR is durably complete)
// with one durability barrier for many objects:
//
//  1. Create (new bytes) or Adopt (a complete local file) gives an Upload,
//     visible under no key;
//  2. Sync makes the bytes of finished uploads durable;
//  3. Place makes synced uploads visible under their keys, atomically each
//     (a reader sees the whole object or none), and durably before it
//     returns.
//
// An Upload is consumed by Place (moved into place, or dropped when its
// key exists and the placement keeps the existing object) or by Discard.
type Store interface {
	// Create starts a new object.
	Create(ctx context.Context) (Upload, error)
	// Adopt starts an object from the complete local file at path. The
	// store takes the file over when the upload is placed (a directory
	// renames it, a bucket uploads it, then removes it); Discard leaves it
	// to its owner.
	Adopt(ctx context.Context, path string) (Upload, error)
	// Sync makes the bytes of closed uploads durable.
	Sync(ctx context.Context, ups ...Upload) error
	// Place makes each placement's synced upload visible under its key.
	// It places every one it can and reports the others' errors joined;
	// each placement's upload is consumed either way.
	Place(ctx context.Context, ps ...Placement) error
	// Open opens key for reading (Seek for Range requests). A missing key
	// is an error matching fs.ErrNotExist.
	Open(ctx context.Context, key string) (Object, error)
	// Stat describes key; a missing key matches fs.ErrNotExist.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// Delete removes key, durably before it returns (a crash never
	// brings it back). A missing key is an error matching fs.ErrNotExist
	// where the store can tell (a directory can; S3 cannot).
	Delete(ctx context.Context, key string) error
	// List calls fn for every object whose key starts with prefix and has
	// no slash after the prefix's last one (one level, as S3 lists with
	// delimiter "/": "" lists the narinfos and nix-cache-info, "nar/" the
	// NARs), in no particular order, until fn returns an error
	// (returned; ErrStopList stops without one). Uploads in progress are
	// not listed.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// Clean removes what interrupted writes left behind (never an object
	// under a key). A Cache calls it once when it opens.
	Clean(ctx context.Context) error
	// String names the store for logs and errors (file:DIR, s3://…).
	String() string
}

// Upload is an object being written: bytes go in with Write, Close ends
// them; it is not visible under any key until Store.Place.
type Upload interface {
	io.Writer
	// Close ends writing; the upload is then ready for Sync and Place.
	Close() error
	// Discard drops the upload (what the store wrote for it; an adopted
	// file stays). A no-op once the upload is placed or discarded.
	Discard()
}

// Placement names the key a synced upload goes to.
type Placement struct {
	Upload Upload
	Key    string
	// Keep leaves an object already under Key in place and drops the
	// upload: for content-named objects (NARs), where an existing object
	// holds the same bytes. Otherwise the upload replaces it atomically.
	Keep bool
	// Encoding is the Content-Encoding an object store serves the object
	// with to clients reading the bucket directly (a log's compression,
	// for `nix log`); a directory ignores it.
	Encoding string
}

// Object is an object opened for reading.
type Object interface {
	io.ReadSeekCloser
	Info() ObjectInfo
}

// ObjectInfo describes an object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// ErrStopList, returned by a List callback, ends the listing early
// without an error.
var ErrStopList = errors.New("stop listing")

// isNotExist reports whether err says a key is missing.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// readSmall reads a whole object of at most max bytes.
func readSmall(ctx context.Context, st Store, key string, max int64) ([]byte, error) {
	o, err := st.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer o.Close()
	if o.Info().Size > max {
		return nil, &tooLargeError{key: key, size: o.Info().Size, max: max}
	}
	b, err := io.ReadAll(io.LimitReader(o, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, &tooLargeError{key: key, size: int64(len(b)), max: max}
	}
	return b, nil
}

type tooLargeError struct {
	key       string
	size, max int64
}

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("object %s is over the %d-byte limit (%d bytes)", e.key, e.max, e.size)
}

// putBytes writes b under key, replacing what is there, atomically and
// durably.
func putBytes(ctx context.Context, st Store, key string, b []byte) error {
	up, err := st.Create(ctx)
	if err != nil {
		return err
	}
	if _, err := up.Write(b); err != nil {
		up.Discard()
		return err
	}
	if err := up.Close(); err != nil {
		up.Discard()
		return err
	}
	if err := st.Sync(ctx, up); err != nil {
		up.Discard()
		return err
	}
	return st.Place(ctx, Placement{Upload: up, Key: key})
}
