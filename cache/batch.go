package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/storepath"
)

// A batch publishes many store paths with one durability barrier instead
// of several fsyncs per path. The order keeps the package invariant (a
// narinfo never names a NAR that is not durably complete) across a crash
// at any point:
//
//  1. every NAR is spooled to an upload and its signed narinfo to
//     another, unsynced (for .drv files, in parallel); in a FileStore,
//     temp files in nar/'s spool directories;
//  2. one barrier (Store.Sync) makes all their bytes durable (syncfs(2)
//     on Linux for more than a couple of files, else fsync of each);
//  3. the NARs are placed (renamed into place, nar/ synced);
//  4. only then are the narinfos placed (renamed, the cache directory
//     synced) before the batch reports success.
//
// A crash before 3 leaves only uploads (Open cleans them); between 3 and
// 4, NARs without narinfos (harmless, content-named); during 4, a prefix
// of the narinfos, each naming a NAR made durable in 3.

// pending is one store path of a batch.
type pending struct {
	sp   storepath.StorePath
	e    Entry
	nar  Upload // spooled NAR
	url  string
	info Upload // its narinfo, nil until prepareInfo
}

// prepareInfo renders and signs p's narinfo into an upload: signing is
// the larger part of a .drv's cost, so the parallel spoolers do it (in a
// FileStore, creating the file in a spool directory keeps them off the
// cache directory's lock).
func (c *Cache) prepareInfo(ctx context.Context, p *pending) error {
	body, err := c.render(p.sp, &p.e, p.url)
	if err != nil {
		return fmt.Errorf("cache publish %s: %w", p.sp, err)
	}
	up, err := c.store.Create(ctx)
	if err == nil {
		if _, err = up.Write(body); err == nil {
			err = up.Close()
		}
		if err != nil {
			up.Discard()
		}
	}
	if err != nil {
		return fmt.Errorf("cache publish %s: write narinfo: %w", p.sp, err)
	}
	p.info = up
	return nil
}

func (p *pending) discard() {
	if p.nar != nil {
		p.nar.Discard()
	}
	if p.info != nil {
		p.info.Discard()
	}
}

// commit runs steps 2-4 above for spooled NARs, after writing the narinfo
// uploads the spoolers did not (input sources'). Uploads not placed are
// discarded whatever happens.
func (c *Cache) commit(ctx context.Context, ps []*pending, t *batchTimes) (err error) {
	defer func() {
		for _, p := range ps {
			p.discard()
		}
	}()
	if len(ps) == 0 {
		return nil
	}
	ups := make([]Upload, 0, 2*len(ps))
	for _, p := range ps {
		if p.info == nil {
			if err := c.prepareInfo(ctx, p); err != nil {
				return err
			}
		}
		ups = append(ups, p.nar, p.info)
	}
	t.mark(&t.prepare)
	var keys []string
	for _, p := range ps {
		keys = append(keys, c.fenceKeys(p.sp.HashPart, p.url, p.e.References)...)
	}
	defer c.enter(keys...)()
	if err := c.store.Sync(ctx, ups...); err != nil {
		return fmt.Errorf("cache publish %d paths: %w", len(ps), err)
	}
	t.mark(&t.barrier)
	nars := make([]Placement, 0, len(ps))
	for _, p := range ps {
		// Content-named and placed only after a barrier: an object
		// already there holds the same bytes.
		nars = append(nars, Placement{Upload: p.nar, Key: p.url, Keep: true})
	}
	if err := c.store.Place(ctx, nars...); err != nil {
		return fmt.Errorf("cache publish %d paths: place NARs: %w", len(ps), err)
	}
	t.mark(&t.nars)
	// Hold every stripe the batch touches, in order, so a concurrent
	// publisher of the same path sees our narinfo only once it is durable.
	var stripes []int
	for _, p := range ps {
		stripes = append(stripes, c.stripe(p.sp.HashPart))
	}
	slices.Sort(stripes)
	stripes = slices.Compact(stripes)
	for _, i := range stripes {
		c.locks[i].Lock()
	}
	defer func() {
		for _, i := range stripes {
			c.locks[i].Unlock()
		}
	}()
	var errs []error
	infos := make([]Placement, 0, len(ps))
	var bytes int64 // the placed narinfos' FileSize, for the counts
	for _, p := range ps {
		if done, err := c.alreadyPublished(ctx, p.sp, p.e.NarHash); done || err != nil {
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		infos = append(infos, Placement{Upload: p.info, Key: narinfoKey(p.sp.HashPart)})
		bytes += p.e.FileSize
	}
	if len(infos) > 0 {
		if err := c.store.Place(ctx, infos...); err != nil {
			errs = append(errs, fmt.Errorf("cache publish %d paths: place narinfos: %w", len(infos), err))
		} else {
			c.stored(len(infos), bytes)
		}
		c.log.DebugContext(ctx, "published", "paths", len(infos))
	}
	t.mark(&t.narinfos)
	return errors.Join(errs...)
}

// batchTimes are the phases of one batch, for its log line.
type batchTimes struct {
	last                                          time.Time
	read, spool, prepare, barrier, nars, narinfos time.Duration
}

// mark ends a phase: it adds the time since the last mark to d.
func (t *batchTimes) mark(d *time.Duration) {
	now := time.Now()
	*d += now.Sub(t.last)
	t.last = now
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// trace reports a durability step to a test (see batch_test.go).
func (c *Cache) trace(op, path string) {
	if c.onStep != nil {
		c.onStep(op, path)
	}
}

// PublishDerivationClosures publishes, as one batch, what
// PublishDerivationClosure publishes for each of drvPaths. Each .drv and
// input source is read and spooled once however many closures share it,
// paths already in the cache are skipped, and the whole batch becomes
// durable with one barrier (see commit). A .drv whose closure cannot be
// read gets its own error in bad and does not stop the others; err
// reports a failure to publish the batch (nothing of it may be relied on).
func (c *Cache) PublishDerivationClosures(ctx context.Context, drvPaths []string, root string) (bad map[string]error, err error) {
	t := batchTimes{last: time.Now()}
	bad = map[string]error{}
	drvs := map[string]*derivation.Derivation{}
	readErr := map[string]error{}
	for _, top := range drvPaths {
		if _, ok := drvs[top]; ok {
			continue
		}
		queue := []string{top}
		seen := map[string]bool{top: true}
		for len(queue) > 0 && bad[top] == nil {
			p := queue[0]
			queue = queue[1:]
			d, ok := drvs[p]
			if !ok {
				if e := readErr[p]; e != nil {
					bad[top] = fmt.Errorf("cache publish closure %s: %w", top, e)
					break
				}
				var rerr error
				if d, rerr = readDrv(root, p); rerr != nil {
					readErr[p] = rerr
					bad[top] = fmt.Errorf("cache publish closure %s: %w", top, rerr)
					break
				}
				drvs[p] = d
			}
			for _, in := range d.InputDrvs {
				if !seen[in.Path] {
					seen[in.Path] = true
					queue = append(queue, in.Path)
				}
			}
		}
	}
	// A bad closure's .drvs are published only when a good one needs them.
	need := map[string]bool{}
	for _, top := range drvPaths {
		if bad[top] == nil {
			markClosure(top, drvs, need)
		}
	}
	if len(need) == 0 {
		return bad, nil
	}
	var ps []*pending
	abort := func(err error) (map[string]error, error) {
		for _, p := range ps {
			p.discard()
		}
		return bad, err
	}
	planned := map[string]bool{}
	var srcs []string
	for p := range need {
		srcs = append(srcs, drvs[p].InputSrcs...)
	}
	slices.Sort(srcs)
	srcs = slices.Compact(srcs)
	var candidates []string
	queue := srcs
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if planned[p] {
			continue
		}
		planned[p] = true
		if ni, err := c.Lookup(p); err == nil {
			for _, r := range ni.References {
				queue = append(queue, c.opts.StoreDir+"/"+r)
			}
			continue
		}
		if candidates == nil {
			if candidates, err = storeListing(root, c.opts.StoreDir); err != nil {
				return abort(fmt.Errorf("cache publish closures: %w", err))
			}
		}
		pd, err := c.spoolSource(ctx, p, root, candidates)
		if err != nil {
			return abort(fmt.Errorf("cache publish closures: input source: %w", err))
		}
		ps = append(ps, pd)
		queue = append(queue, pd.e.References...)
	}
	t.mark(&t.read)
	var todo []string
	for p := range need {
		if !c.Has(p) {
			todo = append(todo, p)
		}
	}
	slices.Sort(todo)
	spooled := make([]*pending, len(todo))
	errs := make([]error, len(todo))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(len(todo), 2*runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				spooled[i], errs[i] = c.spoolDrv(ctx, todo[i], root, drvs[todo[i]])
				if errs[i] == nil {
					errs[i] = c.prepareInfo(ctx, spooled[i])
				}
			}
		}()
	}
	for i := range todo {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, pd := range spooled {
		if pd != nil {
			ps = append(ps, pd)
		}
		if errs[i] != nil && err == nil {
			err = errs[i]
		}
	}
	if err != nil {
		return abort(fmt.Errorf("cache publish closures: %w", err))
	}
	t.mark(&t.spool)
	if err := c.commit(ctx, ps, &t); err != nil {
		return bad, err
	}
	if len(ps) > 0 {
		// Where a slow batch spends its time: reading the closures and
		// spooling input sources (read), compressing and signing the
		// .drvs (spool), the barrier's syncfs (sync), the renames and
		// directory syncs (place).
		c.log.InfoContext(ctx, "published derivation closures", "derivations", len(drvPaths), "paths", len(ps),
			"read_ms", millis(t.read), "spool_ms", millis(t.spool+t.prepare), "sync_ms", millis(t.barrier),
			"place_ms", millis(t.nars+t.narinfos))
	}
	return bad, nil
}

func markClosure(top string, drvs map[string]*derivation.Derivation, need map[string]bool) {
	queue := []string{top}
	for len(queue) > 0 {
		p := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if need[p] {
			continue
		}
		need[p] = true
		for _, in := range drvs[p].InputDrvs {
			queue = append(queue, in.Path)
		}
	}
}

func readDrv(root, p string) (*derivation.Derivation, error) {
	d, err := derivation.ReadStoreFile(root, p)
	if err != nil {
		return nil, fmt.Errorf("read closure: %w", err)
	}
	return d, nil
}

// spoolDrv spools a .drv already parsed as d, after checking that its
// contents hash to its path.
func (c *Cache) spoolDrv(ctx context.Context, p, root string, d *derivation.Derivation) (*pending, error) {
	sp, err := c.parsePath(p)
	if err != nil {
		return nil, err
	}
	got, err := d.DrvPath()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if got != sp.String() {
		return nil, fmt.Errorf("%s: contents hash to %s", p, got)
	}
	e := Entry{StorePath: sp.String(), Compression: c.opts.Compression, References: d.References()}
	return c.spoolPending(ctx, sp, e, filepath.Join(root, sp.String()), nil)
}

// spoolSource spools a non-derivation path, scanning it for references.
func (c *Cache) spoolSource(ctx context.Context, p, root string, candidates []string) (*pending, error) {
	sp, err := c.parsePath(p)
	if err != nil {
		return nil, err
	}
	scan := storepath.NewScanner(append(slices.Clip(candidates), sp.String()))
	pd, err := c.spoolPending(ctx, sp, Entry{StorePath: sp.String(), Compression: c.opts.Compression}, filepath.Join(root, sp.String()), scan)
	if err != nil {
		return nil, err
	}
	pd.e.References = scan.Found()
	return pd, nil
}

func (c *Cache) spoolPending(ctx context.Context, sp storepath.StorePath, e Entry, fsPath string, scan *storepath.Scanner) (*pending, error) {
	var extra []io.Writer
	if scan != nil {
		extra = append(extra, scan)
	}
	s, err := c.spool(ctx, func(w io.Writer) error { return nar.Dump(w, fsPath) }, extra...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sp, err)
	}
	e.NarHash, e.NarSize, e.FileHash, e.FileSize = s.narHash, s.narSize, s.fileHash, s.fileSize
	return &pending{sp: sp, e: e, nar: s.up, url: narURL(e.FileHash, e.Compression)}, nil
}
