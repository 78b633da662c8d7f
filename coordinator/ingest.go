package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync"

	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/storepath"
)

// Streamed uploads (Config.StreamUploads).
//
// An agent uploads each output as one compressed NAR over SFTP, in writes
// at offsets with several in flight. Without streaming the file is
// written under StateDir/uploads and read back when the agent reports
// success. With streaming an Ingest takes the writes instead: it puts them
// in order (holding writes that arrive ahead of a gap, up to ingestWindow
// bytes), passes every byte once to an upload of the cache's store (for
// an S3 store: parts straight into the bucket, see cache/s3upload.go) and
// to a measurer (file hash, NAR validity and hash, reference scan), and
// keeps nothing else. When the agent reports success the report is
// checked against what the measurer found and the upload is published,
// or discarded: it is never visible under a key before it was verified.
//
// An Ingest lives while the agent holds the build, across its SSH
// sessions: an agent that reconnects stats the file (the bytes taken in
// order) and resumes from there. It ends with the report, the build's
// release (requeue, cancel, agent lost) or the coordinator's Close. A
// coordinator that restarts has none: agents then upload again from the
// start, and the store's Clean removed what the old process left.
//
// A check side's uploads are not streamed: the check keeps their NARs on
// disk.

const (
	// ingestWindow bounds how far ahead of the bytes taken in order one
	// upload's writes may land (the agent keeps 16 writes of 252 KiB in
	// flight).
	ingestWindow = 8 << 20
	// maxIngestPending bounds the bytes held ahead of gaps by all
	// streamed uploads together.
	maxIngestPending = 256 << 20
)

// errStoreTrouble marks a streamed upload that broke because the cache's
// store failed: the coordinator's trouble, charged to nobody.
var errStoreTrouble = errors.New("the cache store failed")

type ingestKey struct{ agent, build string }

// ingests are the streamed uploads in progress; dropped ones wait in
// queue for the dropper (their store uploads are discarded off the
// coordinator lock).
type ingests struct {
	mu      sync.Mutex
	m       map[ingestKey]map[string]*Ingest
	queue   []*Ingest
	kick    chan struct{}
	pending int64 // bytes held ahead of gaps, all ingests
}

// Ingest is one streamed upload: the file name of one output of a held
// build.
type Ingest struct {
	c       *Coordinator
	key     ingestKey
	name    string
	comp    string
	allowed allowedRefs

	mu      sync.Mutex
	next    int64            // bytes taken in order
	pending map[int64][]byte // writes ahead of next
	held    int64            // bytes in pending
	up      cache.Upload     // nil until the first byte
	m       *measurer
	scan    *storepath.Scanner
	ended   error // once set, every call fails with it
}

var (
	errIngestFinished = errors.New("upload already verified")
	errIngestDropped  = errors.New("upload dropped (the build is no longer held, or the file was removed)")
)

// Streams reports whether uploads of the build stream (see Ingest).
func (c *Coordinator) Streams(buildID string) bool {
	if !c.cfg.StreamUploads || c.cfg.Cache == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, side := c.checks.byBuild[buildID]
	return !side
}

// OpenIngest returns the streamed upload of name, an upload name of a
// build the agent holds, starting it when there is none; trunc starts it
// over.
func (c *Coordinator) OpenIngest(ctx context.Context, agentID, buildID, name string, trunc bool) (*Ingest, error) {
	k := ingestKey{agentID, buildID}
	// An upload in the table was checked when it was started, and is
	// dropped when the build leaves the agent.
	g := c.Ingest(agentID, buildID, name)
	if g == nil {
		b, err := c.heldBuild(ctx, agentID, buildID)
		if err != nil {
			return nil, err
		}
		_, comp, err := uploadName(b, name)
		if err != nil {
			return nil, err
		}
		allowed, err := c.allowedReferences(ctx, b)
		if err != nil {
			return nil, unavailable(fmt.Errorf("upload %s of build %s: read the input closure: %w", name, buildID, err))
		}
		g = &Ingest{c: c, key: k, name: name, comp: comp, allowed: allowed, pending: map[int64][]byte{}}
		c.ing.mu.Lock()
		if have := c.ing.m[k][name]; have != nil {
			g = have
		} else {
			if c.ing.m[k] == nil {
				c.ing.m[k] = map[string]*Ingest{}
			}
			c.ing.m[k][name] = g
		}
		c.ing.mu.Unlock()
		// Released meanwhile: its drop has passed, so drop this one.
		if !c.Holds(ctx, agentID, buildID) {
			c.RemoveIngest(agentID, buildID, name)
			return nil, fmt.Errorf("build %s: %w", buildID, ErrNotYourBuild)
		}
	}
	if trunc {
		if err := g.Truncate(0); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Ingest is the streamed upload of name of the agent's build, or nil.
func (c *Coordinator) Ingest(agentID, buildID, name string) *Ingest {
	c.ing.mu.Lock()
	defer c.ing.mu.Unlock()
	return c.ing.m[ingestKey{agentID, buildID}][name]
}

// IngestSizes are the names and sizes (bytes taken in order) of the
// agent's streamed uploads of the build.
func (c *Coordinator) IngestSizes(agentID, buildID string) map[string]int64 {
	c.ing.mu.Lock()
	gs := make([]*Ingest, 0, len(c.ing.m[ingestKey{agentID, buildID}]))
	for _, g := range c.ing.m[ingestKey{agentID, buildID}] {
		gs = append(gs, g)
	}
	c.ing.mu.Unlock()
	out := make(map[string]int64, len(gs))
	for _, g := range gs {
		out[g.name] = g.Size()
	}
	return out
}

// RemoveIngest drops the streamed upload of name; fs.ErrNotExist when
// there is none.
func (c *Coordinator) RemoveIngest(agentID, buildID, name string) error {
	g := c.takeIngest(agentID, buildID, name)
	if g == nil {
		return fs.ErrNotExist
	}
	c.dropIngests([]*Ingest{g})
	return nil
}

// takeIngest removes the streamed upload of name from the table and
// returns it (nil when there is none).
func (c *Coordinator) takeIngest(agentID, buildID, name string) *Ingest {
	k := ingestKey{agentID, buildID}
	c.ing.mu.Lock()
	defer c.ing.mu.Unlock()
	g := c.ing.m[k][name]
	if g != nil {
		delete(c.ing.m[k], name)
		if len(c.ing.m[k]) == 0 {
			delete(c.ing.m, k)
		}
	}
	return g
}

// releaseIngests drops every streamed upload of the agent's build (its
// release).
func (c *Coordinator) releaseIngests(agentID, buildID string) {
	k := ingestKey{agentID, buildID}
	c.ing.mu.Lock()
	gs := make([]*Ingest, 0, len(c.ing.m[k]))
	for _, g := range c.ing.m[k] {
		gs = append(gs, g)
	}
	delete(c.ing.m, k)
	c.ing.mu.Unlock()
	c.dropIngests(gs)
}

// dropIngests queues gs for the dropper, which ends them (later writes
// fail) and discards their store uploads, off every lock: this runs
// under the coordinator's.
func (c *Coordinator) dropIngests(gs []*Ingest) {
	if len(gs) == 0 {
		return
	}
	c.ing.mu.Lock()
	c.ing.queue = append(c.ing.queue, gs...)
	c.ing.mu.Unlock()
	select {
	case c.ing.kick <- struct{}{}:
	default:
	}
}

// dropper discards dropped ingests' store uploads until Close, and then
// every one left.
func (c *Coordinator) dropper() {
	defer c.wg.Done()
	for {
		var stop bool
		select {
		case <-c.ing.kick:
		case <-c.done:
			stop = true
		}
		c.ing.mu.Lock()
		q := c.ing.queue
		c.ing.queue = nil
		if stop {
			for _, names := range c.ing.m {
				for _, g := range names {
					q = append(q, g)
				}
			}
			clear(c.ing.m)
		}
		c.ing.mu.Unlock()
		for _, g := range q {
			g.mu.Lock()
			if g.ended == nil {
				g.ended = errIngestDropped
			}
			g.resetLocked()
			g.mu.Unlock()
		}
		if stop {
			return
		}
	}
}

// Size is how many bytes of the file were taken in order: where a
// resumed upload goes on from.
func (g *Ingest) Size() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.next
}

// WriteAt takes a write of the file. Bytes before Size are already there
// (a resumed upload's overlap) and skipped; a write ahead of Size waits in
// memory for the gap to fill, within ingestWindow.
func (g *Ingest) WriteAt(p []byte, off int64) (int, error) {
	n, err := g.writeAt(p, off)
	if errors.Is(err, errStoreTrouble) {
		g.c.noteStoreTrouble(g.key.build)
	}
	return n, err
}

// noteStoreTrouble marks that the build's upload broke on the cache
// store, so that its setup failure, should the agent give up, is the
// coordinator's.
func (c *Coordinator) noteStoreTrouble(buildID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.space.refused[buildID] = "coordinator could not write the upload to its cache store"
}

func (g *Ingest) writeAt(p []byte, off int64) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ended != nil {
		return 0, g.ended
	}
	end := off + int64(len(p))
	switch {
	case off < 0:
		return 0, fmt.Errorf("write at %d: negative offset", off)
	case end <= g.next:
		return len(p), nil
	case off > g.next:
		if end-g.next > ingestWindow {
			return 0, fmt.Errorf("write at %d+%d is more than %d bytes past the %d bytes received in order", off, len(p), ingestWindow, g.next)
		}
		if old, ok := g.pending[off]; ok && len(old) >= len(p) {
			return len(p), nil
		}
		if !g.c.holdPending(int64(len(p))) {
			return 0, fmt.Errorf("write at %d+%d: the coordinator holds %d bytes of writes ahead of gaps already; write in order", off, len(p), maxIngestPending)
		}
		if old, ok := g.pending[off]; ok {
			g.c.holdPending(-int64(len(old)))
			g.held -= int64(len(old))
		}
		g.pending[off] = slices.Clone(p)
		g.held += int64(len(p))
		return len(p), nil
	}
	if err := g.take(p[g.next-off:]); err != nil {
		return 0, err
	}
	// Writes that waited for this one.
	for again := true; again && len(g.pending) > 0; {
		again = false
		for o, b := range g.pending {
			if o > g.next {
				continue
			}
			delete(g.pending, o)
			g.held -= int64(len(b))
			g.c.holdPending(-int64(len(b)))
			if e := o + int64(len(b)); e > g.next {
				if err := g.take(b[g.next-o:]); err != nil {
					return 0, err
				}
			}
			again = true
		}
	}
	return len(p), nil
}

// holdPending counts n more (or fewer) bytes held ahead of gaps, refusing
// growth past maxIngestPending.
func (c *Coordinator) holdPending(n int64) bool {
	c.ing.mu.Lock()
	defer c.ing.mu.Unlock()
	if n > 0 && c.ing.pending+n > maxIngestPending {
		return false
	}
	c.ing.pending += n
	return true
}

// take passes the next bytes of the file to the store upload and the
// measurer, starting both with the first byte. A store that fails ends
// the upload (the agent starts over) and marks the build's setup failure,
// should the agent give up, as the coordinator's.
func (g *Ingest) take(b []byte) error {
	if g.up == nil {
		if err := g.startLocked(); err != nil {
			return err
		}
	}
	if _, err := g.up.Write(b); err != nil {
		return g.storeFailedLocked(fmt.Errorf("write %s at %d: %w", g.name, g.next, err))
	}
	g.m.Write(b)
	g.next += int64(len(b))
	return nil
}

func (g *Ingest) startLocked() error {
	up, err := g.c.cfg.Cache.Store().Create(g.c.life)
	if err != nil {
		return g.storeFailedLocked(fmt.Errorf("start %s: %w", g.name, err))
	}
	g.up = up
	g.scan = g.allowed.scanner()
	g.m = newMeasurer(g.comp, g.scan)
	return nil
}

// storeFailedLocked starts the upload over after the store failed.
func (g *Ingest) storeFailedLocked(err error) error {
	g.resetLocked()
	g.c.log.Warn("streamed upload: the cache store failed; the agent starts the file over",
		"build", g.key.build, "agent", g.key.agent, "file", g.name, "store", g.c.cfg.Cache.Store().String(), "err", err)
	return fmt.Errorf("streamed upload into %s: %w: %w", g.c.cfg.Cache.Store().String(), errStoreTrouble, err)
}

// resetLocked drops what the upload holds: its store upload, measurer and
// waiting writes.
func (g *Ingest) resetLocked() {
	if g.up != nil {
		g.m.Abort()
		g.up.Discard()
		g.up, g.m, g.scan = nil, nil, nil
	}
	g.c.holdPending(-g.held)
	clear(g.pending)
	g.held, g.next = 0, 0
}

// Truncate starts the file over (size 0); truncating to its size changes
// nothing. Other sizes are refused: a streamed file cannot shrink.
func (g *Ingest) Truncate(size int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ended != nil {
		return g.ended
	}
	switch size {
	case 0:
		g.resetLocked()
		return nil
	case g.next:
		return nil
	}
	return fmt.Errorf("truncate %s to %d: a streamed upload can only start over (0) or keep its %d bytes", g.name, size, g.next)
}

// finish ends the file: what its bytes are, the closed store upload
// holding them (the caller publishes or discards it) and the scanner
// that saw the NAR. An error matching errStoreTrouble is the store's.
func (g *Ingest) finish() (measured, cache.Upload, *storepath.Scanner, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ended != nil {
		return measured{}, nil, nil, g.ended
	}
	g.ended = errIngestFinished
	if len(g.pending) > 0 {
		n := g.held
		g.resetLocked()
		return measured{}, nil, nil, fmt.Errorf("upload %s has a gap: %d bytes received in order, %d more after it", g.name, g.next, n)
	}
	if g.up == nil {
		if err := g.startLocked(); err != nil {
			return measured{}, nil, nil, err
		}
	}
	m := g.m.Finish()
	up, scan := g.up, g.scan
	g.up, g.m, g.scan = nil, nil, nil
	if err := up.Close(); err != nil {
		up.Discard()
		return measured{}, nil, nil, fmt.Errorf("close %s in %s: %w: %w", g.name, g.c.cfg.Cache.Store().String(), errStoreTrouble, err)
	}
	return m, up, scan, nil
}
