package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// spoolFile is an upload as both stores hold it until it is placed: a local
// file, written to a temp file in a spool directory (Create) or adopted
// where it already is (Adopt). Its store places it: a rename into the
// served tree (file:) or a PUT from the file (s3:).
type spoolFile struct {
	owner   Store
	f       *os.File // open while writing
	name    string
	adopted bool
	public  bool // made world-readable on Close (it is renamed into the served tree)
	done    bool
}

func (u *spoolFile) Write(p []byte) (int, error) {
	if u.f == nil {
		return 0, fmt.Errorf("write %s: upload closed", u.name)
	}
	return u.f.Write(p)
}

func (u *spoolFile) Close() error {
	if u.f == nil {
		return nil
	}
	f := u.f
	u.f = nil
	if u.public {
		// World-readable once renamed into place: the cache is public.
		return errors.Join(f.Chmod(0o644), f.Close())
	}
	return f.Close()
}

func (u *spoolFile) Discard() {
	if u.done {
		return
	}
	u.done = true
	if u.f != nil {
		u.f.Close()
		u.f = nil
	}
	if !u.adopted {
		os.Remove(u.name)
	}
}

// createSpooled starts an upload in a new temp file in dir (made again if
// someone removed it under a running coordinator, rather than failing
// every publish). what names the store in errors.
func createSpooled(owner Store, what, dir, pattern string, public bool) (*spoolFile, error) {
	f, err := os.CreateTemp(dir, pattern)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(dir, 0o700); err == nil {
			f, err = os.CreateTemp(dir, pattern)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: create: %w", what, err)
	}
	return &spoolFile{owner: owner, f: f, name: f.Name(), public: public}, nil
}

// adoptSpooled takes a complete regular file as an upload, without
// copying it; placing it moves or removes it.
func adoptSpooled(owner Store, what, p string) (*spoolFile, error) {
	st, err := os.Lstat(p)
	if err != nil {
		return nil, fmt.Errorf("%s: adopt: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: adopt %s: not a regular file (%s)", what, p, st.Mode().Type())
	}
	return &spoolFile{owner: owner, name: p, adopted: true}, nil
}

// ownSpooled returns u as owner's own upload, still to be placed.
func ownSpooled(owner Store, what string, u Upload) (*spoolFile, error) {
	sp, ok := u.(*spoolFile)
	if !ok || sp == nil || sp.owner != owner {
		return nil, fmt.Errorf("%s: upload %T is not this store's", what, u)
	}
	if sp.done {
		return nil, fmt.Errorf("%s: upload %s already placed or discarded", what, sp.name)
	}
	return sp, nil
}
