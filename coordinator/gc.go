package coordinator

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/cache/retention"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/storepath"
)

// Cache retention: pins, the batched last accesses, and the collection
// that applies the policy (cache/retention) to the cache.

// DefaultAccessFlush is how often recorded narinfo fetches are written to
// the store.
const DefaultAccessFlush = 30 * time.Second

// gcBatch is how many narinfos one deletion step removes (and one
// cache-deleted event lists).
const gcBatch = 500

// maxWhy bounds the paths one collection explains.
const maxWhy = 1000

// Pin is a pinned cache path.
type Pin = db.Pin

// PinPaths pins store paths in the cache (each must be there), so that
// they and their closures are kept until unpinned.
func (c *Coordinator) PinPaths(ctx context.Context, paths []string, reason, by string) error {
	if c.cfg.Cache == nil {
		return errors.New("pin: this coordinator has no cache")
	}
	if len(reason) > 1024 || strings.ContainsAny(reason, "\n\r") {
		return &plainError{"pin: a reason is one line of at most 1024 bytes", db.ErrConflict}
	}
	now := c.clk.Now()
	pins := make([]db.Pin, 0, len(paths))
	for _, p := range paths {
		sp, err := storepath.Parse(p)
		if err != nil || sp.StoreDir != c.cfg.Cache.StoreDir() {
			return &plainError{fmt.Sprintf("pin: %q is not a store path in %s", text.Truncate(p, 200), c.cfg.Cache.StoreDir()), db.ErrNotFound}
		}
		if !c.cfg.Cache.Has(sp.String()) {
			return &plainError{fmt.Sprintf("pin: %s is not in the cache", sp), db.ErrNotFound}
		}
		pins = append(pins, db.Pin{Path: sp.String(), Reason: reason, CreatedAt: now, By: by})
	}
	if err := c.store.PinPaths(ctx, pins); err != nil {
		return fmt.Errorf("pin %d paths: %w", len(pins), err)
	}
	c.log.Info("cache paths pinned", "paths", len(pins), "by", by)
	return nil
}

// UnpinPaths removes pins and says how many there were.
func (c *Coordinator) UnpinPaths(ctx context.Context, paths []string) (int, error) {
	n, err := c.store.UnpinPaths(ctx, paths)
	if err != nil {
		return 0, fmt.Errorf("unpin %d paths: %w", len(paths), err)
	}
	return n, nil
}

// Pins lists the pins.
func (c *Coordinator) Pins(ctx context.Context) ([]db.Pin, error) { return c.store.Pins(ctx) }

// flushAccesses writes the narinfo fetches the cache recorded since the
// last flush, in one background batch.
func (c *Coordinator) flushAccesses(ctx context.Context) error {
	if c.cfg.Cache == nil {
		return nil
	}
	as, dropped := c.cfg.Cache.TakeAccesses()
	if dropped > 0 {
		c.log.Warn("cache accesses dropped: more distinct paths fetched between flushes than kept in memory", "dropped", dropped)
	}
	if len(as) == 0 {
		return nil
	}
	rows := make([]db.CacheAccess, len(as))
	for i, a := range as {
		rows[i] = db.CacheAccess{HashPart: a.HashPart, At: a.At}
	}
	if err := c.store.RecordCacheAccess(ctx, rows); err != nil {
		return fmt.Errorf("flush %d cache accesses: %w", len(rows), err)
	}
	return nil
}

// watchAccesses flushes accesses periodically, and once more at Close.
func (c *Coordinator) watchAccesses() {
	defer c.wg.Done()
	every := c.cfg.AccessFlushInterval
	for {
		select {
		case <-c.clk.After(every):
		case <-c.done:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := c.flushAccesses(ctx); err != nil {
				c.log.Warn("cache accesses not flushed at close", "err", err)
			}
			cancel()
			return
		}
		if err := c.flushAccesses(context.Background()); err != nil {
			c.log.Warn("cache accesses not flushed; they are kept in memory until the next flush", "err", err)
		}
	}
}

// GCOptions are one collection's options.
type GCOptions struct {
	DryRun bool
	// Why lists store paths to explain (why each is kept, or that it
	// goes).
	Why []string
}

// GCReport says what a collection found and did.
type GCReport struct {
	DryRun      bool                `json:"dry_run"`
	Paths       int                 `json:"paths"`
	Bytes       int64               `json:"bytes"`
	Kept        int                 `json:"kept"`
	KeptBytes   int64               `json:"kept_bytes"`
	Delete      []GCPath            `json:"delete"`
	DeleteBytes int64               `json:"delete_bytes"`
	Deleted     int                 `json:"deleted"`
	Protected   int                 `json:"protected_during_run"`
	Orphans     int                 `json:"orphans_deleted"`
	OrphanBytes int64               `json:"orphan_bytes"`
	Logs        int                 `json:"logs_deleted"`
	Skipped     int                 `json:"unreadable_narinfos"`
	Missing     int                 `json:"missing_references"`
	Why         map[string][]string `json:"why,omitempty"`
	Millis      int64               `json:"ms"`
}

// GCPath is one path to delete.
type GCPath struct {
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
}

// CollectCache applies the retention policy to the cache: it reads the
// pins, the last accesses and every build record, scans the narinfos,
// plans (retention.Graph.Plan), and unless DryRun deletes the planned
// paths, narinfos first, then NARs, logs and orphan files.
func (c *Coordinator) CollectCache(ctx context.Context, o GCOptions) (GCReport, error) {
	if c.cfg.Cache == nil {
		return GCReport{}, errors.New("cache gc: this coordinator has no cache")
	}
	if len(o.Why) > maxWhy {
		return GCReport{}, &plainError{fmt.Sprintf("cache gc: at most %d paths to explain", maxWhy), db.ErrConflict}
	}
	start := c.clk.Now()
	rep := GCReport{DryRun: o.DryRun}
	cc := c.cfg.Cache
	var x *cache.Collection
	if !o.DryRun {
		var err error
		if x, err = cc.BeginCollection(); err != nil {
			return rep, fmt.Errorf("cache gc: %w", err)
		}
		defer x.End()
	}
	if err := c.flushAccesses(ctx); err != nil {
		return rep, fmt.Errorf("cache gc: %w", err)
	}
	in := retention.Inputs{Now: start, Accesses: map[string]time.Time{}}
	if x != nil {
		in.Fence = x.Start()
	}
	pins, err := c.store.Pins(ctx)
	if err != nil {
		return rep, fmt.Errorf("cache gc: %w", err)
	}
	for _, p := range pins {
		in.Pins = append(in.Pins, retention.Pin{Base: path.Base(p.Path), Reason: p.Reason})
	}
	as, err := c.store.CacheAccesses(ctx)
	if err != nil {
		return rep, fmt.Errorf("cache gc: %w", err)
	}
	for _, a := range as {
		in.Accesses[a.HashPart] = a.At
	}
	as = nil
	for after := int64(0); ; {
		page, last, err := c.store.BuildRootsPage(ctx, after, 10000)
		if err != nil {
			return rep, fmt.Errorf("cache gc: %w", err)
		}
		if len(page) == 0 {
			break
		}
		after = last
		for _, b := range page {
			in.Builds = append(in.Builds, buildRoot(b))
		}
	}
	g := retention.NewGraph(0)
	urls := map[uint64]int32{}
	rep.Skipped, err = cc.Scan(ctx, func(s cache.Stored) error {
		g.Add(retention.Path{Base: s.Base, References: s.References, Deriver: s.Deriver, FileSize: s.FileSize, Published: s.Published})
		urls[cache.URLKey(s.URL)]++
		rep.Paths++
		rep.Bytes += s.FileSize
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("cache gc: %w", err)
	}
	plan := g.Plan(c.cfg.CachePolicy, in)
	in.Builds = nil
	rep.Kept, rep.KeptBytes, rep.DeleteBytes, rep.Missing = plan.Kept, plan.KeptBytes, plan.DeleteBytes, plan.Missing
	storeDir := cc.StoreDir()
	for _, b := range plan.Delete {
		rep.Delete = append(rep.Delete, GCPath{Path: storeDir + "/" + b})
	}
	explain := func() {
		if len(o.Why) == 0 {
			return
		}
		rep.Why = map[string][]string{}
		for _, p := range o.Why {
			kept, chain, ok := plan.Why(path.Base(p))
			switch {
			case !ok:
				rep.Why[p] = []string{"not in the cache"}
			case !kept:
				rep.Why[p] = []string{"not kept: this collection deletes it"}
			default:
				rep.Why[p] = chain
			}
		}
	}
	if o.DryRun {
		explain()
		rep.Millis = c.clk.Now().Sub(start).Milliseconds()
		c.log.Info("cache gc dry run", "paths", rep.Paths, "kept", rep.Kept, "delete", len(rep.Delete), "delete_bytes", rep.DeleteBytes, "ms", rep.Millis)
		return rep, nil
	}
	if err := c.sweep(ctx, x, plan, urls, &rep); err != nil {
		return rep, err
	}
	explain()
	rep.Millis = c.clk.Now().Sub(start).Milliseconds()
	c.log.Info("cache gc", "paths", rep.Paths, "kept", rep.Kept, "deleted", rep.Deleted, "delete_bytes", rep.DeleteBytes,
		"protected_during_run", rep.Protected, "orphans", rep.Orphans, "logs", rep.Logs, "ms", rep.Millis)
	return rep, nil
}

func buildRoot(b db.BuildRoot) retention.Build {
	r := retention.Build{ID: b.ID, Derivation: path.Base(b.Derivation), Active: !b.State.Terminal(), CreatedAt: b.CreatedAt}
	for _, t := range b.Tags {
		r.Tags = append(r.Tags, [2]string{t.Key, t.Value})
	}
	for _, o := range b.Outputs {
		r.Outputs = append(r.Outputs, path.Base(o))
	}
	return r
}

// sweep deletes what the plan says, in order, keeping whatever was
// touched meanwhile and its closure; then NARs no narinfo names, the
// logs of deleted derivations and orphan files.
func (c *Coordinator) sweep(ctx context.Context, x *cache.Collection, plan *retention.Plan, urls map[uint64]int32, rep *GCReport) error {
	storeDir := c.cfg.Cache.StoreDir()
	deletedHash := map[string]bool{}
	rep.Delete = rep.Delete[:0]
	rep.DeleteBytes = 0
	// untouched runs a removal of a NAR or log, taking what was touched
	// and trying again when it stopped because something was (a fetch or
	// a publication between the narinfos' removal and this one): the
	// file itself is still left alone if it was among what was touched.
	untouched := func(remove func() (bool, error)) (bool, error) {
		for {
			ok, err := remove()
			if !errors.Is(err, cache.ErrTouched) {
				return ok, err
			}
			if t := x.Touched(); len(t) > 0 {
				kept, _ := plan.Protect(t)
				rep.Protected += kept
			}
			if err := ctx.Err(); err != nil {
				return false, err
			}
		}
	}
	todo := plan.Delete
	for len(todo) > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("cache gc: stopped after %d deletions: %w", rep.Deleted, err)
		}
		if t := x.Touched(); len(t) > 0 {
			kept, _ := plan.Protect(t)
			rep.Protected += kept
		}
		batch := make([]string, 0, gcBatch)
		for len(todo) > 0 && len(batch) < gcBatch {
			if plan.Kind(todo[0]) == retention.NotKept {
				batch = append(batch, todo[0])
			}
			todo = todo[1:]
		}
		done, err := x.DeleteNarinfos(ctx, batch)
		if err != nil && !errors.Is(err, cache.ErrTouched) {
			c.recordDeleted(ctx, done, storeDir, rep)
			return fmt.Errorf("cache gc: %w", err)
		}
		// Whatever was not reached goes back to the front of the list.
		gone := map[string]bool{}
		for _, s := range done {
			gone[s.Base] = true
			plan.MarkDeleted(s.Base)
			deletedHash[s.Base[:storepath.HashLen]] = true
		}
		if errors.Is(err, cache.ErrTouched) {
			var rest []string
			for i, b := range batch {
				if gone[b] {
					continue
				}
				// Everything from the first not deleted on was not tried.
				rest = append(rest, batch[i:]...)
				break
			}
			todo = append(rest, todo...)
		}
		c.recordDeleted(ctx, done, storeDir, rep)
		if len(done) > 0 {
			c.log.Info("cache gc batch: narinfos removed and synced; their NARs go next", "narinfos", len(done), "deleted_so_far", rep.Deleted)
		}
		for _, s := range done {
			k := cache.URLKey(s.URL)
			if urls[k]--; urls[k] <= 0 {
				delete(urls, k)
				if _, err := untouched(func() (bool, error) { return x.DeleteNar(s.URL) }); err != nil {
					return fmt.Errorf("cache gc: NAR of %s: %w", s.Base, err)
				}
			}
			if strings.HasSuffix(s.Base, ".drv") {
				if ok, err := untouched(func() (bool, error) { return x.DeleteLog(s.Base) }); err != nil {
					return fmt.Errorf("cache gc: log of %s: %w", s.Base, err)
				} else if ok {
					rep.Logs++
				}
			}
		}
	}
	// Orphans: NARs no narinfo names (a collection killed between a
	// narinfo and its NAR, a publication that failed after placing its
	// NAR) and logs of derivations not in the cache, written before this
	// collection began.
	err := c.cfg.Cache.Files(ctx, func(f cache.File) error {
		if name, ok := strings.CutPrefix(f.Name, "log/"); ok {
			if plan.Has(name) && !deletedHash[name[:min(len(name), storepath.HashLen)]] {
				return nil
			}
		} else if _, live := urls[cache.URLKey(f.Name)]; live {
			return nil
		}
		ok, err := x.DeleteOrphan(f)
		if errors.Is(err, cache.ErrTouched) {
			x.Touched() // a file touched now is one of the keys checked anyway
			ok, err = x.DeleteOrphan(f)
		}
		if err != nil && !errors.Is(err, cache.ErrTouched) {
			return err
		}
		if ok {
			rep.Orphans++
			rep.OrphanBytes += f.Size
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cache gc: orphan files: %w", err)
	}
	hs := make([]string, 0, len(deletedHash))
	for h := range deletedHash {
		hs = append(hs, h)
	}
	slices.Sort(hs)
	if err := c.store.ForgetCacheAccess(ctx, hs); err != nil {
		c.log.Warn("cache gc: last accesses of deleted paths not forgotten", "err", err)
	}
	return nil
}

// recordDeleted adds a batch to the report and appends its cache-deleted
// event.
func (c *Coordinator) recordDeleted(ctx context.Context, done []cache.Stored, storeDir string, rep *GCReport) {
	if len(done) == 0 {
		return
	}
	e := db.Event{Type: db.EventCacheDeleted, At: c.clk.Now()}
	for _, s := range done {
		p := storeDir + "/" + s.Base
		rep.Delete = append(rep.Delete, GCPath{Path: p, Bytes: s.FileSize})
		rep.DeleteBytes += s.FileSize
		rep.Deleted++
		e.Paths = append(e.Paths, p)
		e.Bytes += s.FileSize
	}
	if _, err := c.store.AppendEvent(ctx, e); err != nil {
		c.log.Error("record cache-deleted event", "paths", len(e.Paths), "err", err)
	}
}

// RunCacheGC collects the cache every interval until ctx ends.
func (c *Coordinator) RunCacheGC(ctx context.Context, every time.Duration) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.clk.After(every):
		}
		if _, err := c.CollectCache(ctx, GCOptions{}); err != nil && ctx.Err() == nil {
			c.log.Error("cache gc", "err", err)
		}
	}
}
