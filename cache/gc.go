package cache

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gbc-farm/gbc/narinfo"
	"github.com/gbc-farm/gbc/storepath"
)

// What a collection needs from the cache, and the fence that keeps it
// from deleting anything published while it runs.
//
// Every publication enters the fence with the keys it is about to
// create or rely on — its narinfo's hash part, its NAR's URL, its
// references' hash parts — before it looks at what is there, and leaves
// when it is done. Reads that a new build relies on (Lookup, Has, a
// narinfo fetched over HTTP) touch the hash part while a collection
// runs. A collection deletes a file only under the fence's lock after
// checking that nothing touched it, and stops whenever anything was
// touched since it last looked, so that it can keep the touched paths'
// closures first (Collection.Touched). A collection that starts while a
// publication is in flight sees that publication's keys as touched.

// maxAccesses bounds the last accesses held in memory between flushes.
const maxAccesses = 1 << 20

type fence struct {
	active  atomic.Bool
	mu      sync.Mutex
	pending map[*[]string]struct{} // keys of publications in flight
	touched map[string]struct{}    // since the collection began
	fresh   []string               // touched since the collection last looked
	gen     uint64
	// accesses: narinfo fetches not yet flushed (hash part → unix ms).
	accesses map[string]int64
	dropped  int64
}

// enter registers a publication's keys; call the returned func when it
// is done.
func (c *Cache) enter(keys ...string) func() {
	f := &c.fence
	f.mu.Lock()
	if f.pending == nil {
		f.pending = map[*[]string]struct{}{}
	}
	f.pending[&keys] = struct{}{}
	if f.active.Load() {
		f.touchLocked(keys)
	}
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		delete(f.pending, &keys)
		f.mu.Unlock()
	}
}

// touch records that keys were relied on, while a collection runs.
func (c *Cache) touch(keys ...string) {
	f := &c.fence
	if !f.active.Load() {
		return
	}
	f.mu.Lock()
	if f.active.Load() {
		f.touchLocked(keys)
	}
	f.mu.Unlock()
}

func (f *fence) touchLocked(keys []string) {
	for _, k := range keys {
		if _, ok := f.touched[k]; !ok {
			f.touched[k] = struct{}{}
			f.fresh = append(f.fresh, k)
			f.gen++
		}
	}
}

// recordAccess notes a narinfo fetch (batched; see TakeAccesses).
func (c *Cache) recordAccess(hashPart string) {
	now := c.opts.Clock.Now().UnixMilli()
	f := &c.fence
	f.mu.Lock()
	if f.active.Load() {
		f.touchLocked([]string{hashPart})
	}
	if f.accesses == nil {
		f.accesses = map[string]int64{}
	}
	if _, ok := f.accesses[hashPart]; ok || len(f.accesses) < maxAccesses {
		f.accesses[hashPart] = now
	} else {
		f.dropped++
	}
	f.mu.Unlock()
}

// Access is the last fetch of a path's narinfo.
type Access struct {
	HashPart string
	At       time.Time
}

// TakeAccesses returns the narinfo fetches recorded since the last call
// (the latest per path) and forgets them, and how many were dropped
// because the table was full.
func (c *Cache) TakeAccesses() ([]Access, int64) {
	f := &c.fence
	f.mu.Lock()
	m, dropped := f.accesses, f.dropped
	f.accesses, f.dropped = nil, 0
	f.mu.Unlock()
	out := make([]Access, 0, len(m))
	for h, t := range m {
		out = append(out, Access{HashPart: h, At: time.UnixMilli(t).UTC()})
	}
	return out, dropped
}

// ErrCollecting: another collection is running on this cache.
var ErrCollecting = errors.New("a cache collection is already running")

// Collection is one garbage collection of the cache. Methods are for
// one goroutine.
type Collection struct {
	c     *Cache
	start time.Time
	seen  uint64
}

// BeginCollection starts the fence: from now on what publications rely
// on is recorded, and every publication in flight counts as touched.
func (c *Cache) BeginCollection() (*Collection, error) {
	f := &c.fence
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.active.Load() {
		return nil, ErrCollecting
	}
	f.touched = map[string]struct{}{}
	f.fresh = nil
	f.gen = 0
	f.active.Store(true)
	for keys := range f.pending {
		f.touchLocked(*keys)
	}
	// The wall clock, not the injected one: start is compared with the
	// modification times the kernel stamps on files.
	return &Collection{c: c, start: time.Now()}, nil
}

// Start is when the collection began: files written after it are never
// reaped as orphans.
func (x *Collection) Start() time.Time { return x.start }

// End stops the fence.
func (x *Collection) End() {
	f := &x.c.fence
	f.mu.Lock()
	f.active.Store(false)
	f.touched, f.fresh = nil, nil
	f.mu.Unlock()
}

// Touched returns the keys (hash parts and NAR URLs) touched since the
// last call; deletions stop while any are untaken.
func (x *Collection) Touched() []string {
	f := &x.c.fence
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.fresh
	f.fresh = nil
	x.seen = f.gen
	return out
}

// ErrTouched: something was touched since Touched was last called; call
// it, keep what it names and try again.
var ErrTouched = errors.New("cache touched during the collection")

// removeUntouched removes the object objKey under the fence unless key
// was touched or anything was touched since the collection last looked.
// The removal is durable when it returns (Store.Delete).
func (x *Collection) removeUntouched(ctx context.Context, key, objKey string) (bool, error) {
	f := &x.c.fence
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gen != x.seen {
		return false, ErrTouched
	}
	if _, ok := f.touched[key]; ok {
		return false, nil
	}
	st := x.c.store
	if _, err := st.Stat(ctx, objKey); isNotExist(err) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	err := st.Delete(ctx, objKey)
	if isNotExist(err) {
		return false, nil
	}
	return err == nil, err
}

// Stored is a narinfo as a collection reads it.
type Stored struct {
	Base       string // store path basename
	References []string
	Deriver    string
	URL        string
	FileSize   int64
	Published  time.Time // the narinfo object's modification time
}

// Scan calls fn for every narinfo in the cache (in listing order). A
// narinfo that does not parse is logged and skipped: it is left alone.
func (c *Cache) Scan(ctx context.Context, fn func(Stored) error) (skipped int, err error) {
	buf := make([]byte, 64<<10)
	err = c.store.List(ctx, "", func(oi ObjectInfo) error {
		h, ok := strings.CutSuffix(oi.Key, ".narinfo")
		if !ok || !isHashPart(h) {
			return nil
		}
		s, ok, rerr := c.readStored(ctx, h, buf)
		if rerr != nil {
			return fmt.Errorf("cache scan: %w", rerr)
		}
		if !ok {
			skipped++
			return nil
		}
		return fn(s)
	})
	if err != nil {
		return skipped, err
	}
	return skipped, ctx.Err()
}

// readStored reads one narinfo; ok is false (and the problem logged) for
// one that is gone or does not parse.
func (c *Cache) readStored(ctx context.Context, hashPart string, buf []byte) (Stored, bool, error) {
	key := narinfoKey(hashPart)
	f, err := c.store.Open(ctx, key)
	if isNotExist(err) {
		return Stored{}, false, nil
	}
	if err != nil {
		return Stored{}, false, err
	}
	defer f.Close()
	n, err := readUpTo(f, buf)
	if err != nil {
		return Stored{}, false, err
	}
	if n == len(buf) {
		c.log.Warn("narinfo too large; left alone", "key", key)
		return Stored{}, false, nil
	}
	ni, err := narinfo.Parse(buf[:n])
	if err != nil {
		c.log.Warn("narinfo does not parse; left alone", "key", key, "err", err)
		return Stored{}, false, nil
	}
	sp, err := c.parsePath(ni.StorePath)
	if err != nil || sp.HashPart != hashPart {
		c.log.Warn("narinfo names another path; left alone", "key", key, "store_path", ni.StorePath)
		return Stored{}, false, nil
	}
	return Stored{Base: sp.Base(), References: ni.References, Deriver: ni.Deriver, URL: ni.URL,
		FileSize: int64(ni.FileSize), Published: f.Info().ModTime}, true, nil
}

func readUpTo(f io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		if m == 0 {
			return n, nil
		}
	}
	return n, nil
}

// DeleteNarinfos removes the narinfos of bases (store path basenames)
// that nothing touched, each removal durable (Store.Delete) before the
// next, so that they are all durable before any NAR goes. It returns what it removed with each
// one's NAR URL; on ErrTouched the caller takes Touched and calls again
// with what is still to delete.
func (x *Collection) DeleteNarinfos(ctx context.Context, bases []string) ([]Stored, error) {
	c := x.c
	var done []Stored
	buf := make([]byte, 64<<10)
	var stop error
	for _, b := range bases {
		if err := ctx.Err(); err != nil {
			stop = err
			break
		}
		sp, err := storepath.ParseBase(b)
		if err != nil {
			continue
		}
		s, ok, err := c.readStored(ctx, sp.HashPart, buf)
		if err != nil {
			stop = err
			break
		}
		if !ok {
			continue
		}
		mu := c.lockFor(sp.HashPart)
		mu.Lock()
		removed, err := x.removeUntouched(ctx, sp.HashPart, narinfoKey(sp.HashPart))
		mu.Unlock()
		if err != nil {
			stop = err
			break
		}
		if removed {
			done = append(done, s)
			c.stored(-1, -s.FileSize)
		}
	}
	return done, stop
}

// DeleteNar removes a NAR file (by narinfo URL) unless touched. The
// caller has made sure no narinfo still names it.
func (x *Collection) DeleteNar(url string) (bool, error) {
	name, ok := strings.CutPrefix(url, "nar/")
	if !ok || !isNarName(name) {
		return false, nil
	}
	return x.removeUntouched(x.c.life, url, "nar/"+name)
}

// DeleteLog removes the log of a deleted .drv (basename).
func (x *Collection) DeleteLog(drvBase string) (bool, error) {
	sp, err := storepath.ParseBase(drvBase)
	if err != nil || !sp.IsDerivation() {
		return false, nil
	}
	return x.removeUntouched(x.c.life, sp.HashPart, "log/"+sp.Base())
}

// File is a NAR or log file as Orphans lists it.
type File struct {
	Name    string // nar/<file> or log/<drv>
	Size    int64
	ModTime time.Time
}

// Files lists nar/ and log/ (not uploads in progress) for orphan reaping.
func (c *Cache) Files(ctx context.Context, fn func(File) error) error {
	for _, sub := range []string{"nar/", "log/"} {
		err := c.store.List(ctx, sub, func(oi ObjectInfo) error {
			return fn(File{Name: oi.Key, Size: oi.Size, ModTime: oi.ModTime})
		})
		if err != nil {
			return fmt.Errorf("cache files: %w", err)
		}
	}
	return nil
}

// DeleteOrphan removes a NAR or log file no narinfo names, unless touched
// or written since the collection began.
func (x *Collection) DeleteOrphan(f File) (bool, error) {
	if !f.ModTime.Before(x.start) {
		return false, nil
	}
	if name, ok := strings.CutPrefix(f.Name, "log/"); ok {
		return x.DeleteLog(name)
	}
	return x.DeleteNar(f.Name)
}

// URLKey is the hash a collection counts NAR URLs by (a collision only
// keeps a NAR).
func URLKey(url string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(url))
	return h.Sum64()
}
