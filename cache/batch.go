package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
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
//  1. every NAR is spooled to a temp file in one of nar/'s spool
//     directories and its signed narinfo to a temp file beside it,
//     unsynced (for .drv files, in parallel);
//  2. one barrier makes all their bytes durable (syncfs(2) on Linux for
//     more than a couple of files, else fsync of each);
//  3. the NARs are renamed into place and nar/ is synced;
//  4. only then are the narinfos renamed into place, and the cache
//     directory is synced before the batch reports success.
//
// A crash before 3 leaves only temp files (Open removes them); between 3
// and 4, NARs without narinfos (harmless, content-named); during 4, a
// prefix of the narinfos, each naming a NAR made durable in 3.

// pending is one store path of a batch.
type pending struct {
	sp   storepath.StorePath
	e    Entry
	nar  string // spooled NAR, temp file in a spool directory
	url  string
	info string // narinfo temp file, beside nar until it is renamed
}

// prepareInfo renders and signs p's narinfo into a temp file beside its
// NAR: signing is the larger part of a .drv's cost, so the parallel
// spoolers do it, and creating the file in the spool directory keeps them
// off the cache directory's lock.
func (c *Cache) prepareInfo(p *pending) error {
	body, err := c.render(p.sp, &p.e, p.url)
	if err != nil {
		return fmt.Errorf("cache publish %s: %w", p.sp, err)
	}
	if p.info, err = writeTemp(filepath.Dir(p.nar), body); err != nil {
		return fmt.Errorf("cache publish %s: write narinfo: %w", p.sp, err)
	}
	return nil
}

// fewFiles is the most files the barrier fsyncs one by one; above it one
// syncfs is cheaper than a journal commit per file.
const fewFiles = 2

// commit runs steps 2-4 above for spooled NARs, after writing the narinfo
// temps the spoolers did not (input sources'). Temp files are removed
// whatever happens.
func (c *Cache) commit(ctx context.Context, ps []*pending, t *batchTimes) (err error) {
	defer func() {
		for _, p := range ps {
			if p.nar != "" {
				os.Remove(p.nar)
			}
			if p.info != "" {
				os.Remove(p.info)
			}
		}
	}()
	if len(ps) == 0 {
		return nil
	}
	files := make([]string, 0, 2*len(ps))
	for _, p := range ps {
		if p.info == "" {
			if err := c.prepareInfo(p); err != nil {
				return err
			}
		}
		files = append(files, p.nar, p.info)
	}
	t.mark(&t.prepare)
	var keys []string
	for _, p := range ps {
		keys = append(keys, c.fenceKeys(p.sp.HashPart, p.url, p.e.References)...)
	}
	defer c.enter(keys...)()
	if err := c.barrier(files); err != nil {
		return fmt.Errorf("cache publish %d paths: %w", len(ps), err)
	}
	t.mark(&t.barrier)
	for _, p := range ps {
		dst := filepath.Join(c.dir, filepath.FromSlash(p.url))
		if _, err := os.Stat(dst); err == nil {
			// Content-named and placed only after a barrier: same bytes.
			os.Remove(p.nar)
		} else if err := os.Rename(p.nar, dst); err != nil {
			return fmt.Errorf("cache publish %s: move NAR into place: %w", p.sp, err)
		}
		c.trace("nar", dst)
		p.nar = ""
	}
	if err := syncDir(filepath.Join(c.dir, "nar")); err != nil {
		return fmt.Errorf("cache publish %d paths: %w", len(ps), err)
	}
	c.trace("sync-nar-dir", "")
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
	renamed := 0
	for _, p := range ps {
		if done, err := c.alreadyPublished(p.sp, p.e.NarHash); done || err != nil {
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := os.Rename(p.info, c.narinfoPath(p.sp.HashPart)); err != nil {
			errs = append(errs, fmt.Errorf("cache publish %s: %w", p.sp, err))
			continue
		}
		c.trace("narinfo", c.narinfoPath(p.sp.HashPart))
		p.info = ""
		renamed++
		c.log.DebugContext(ctx, "published", "path", p.sp.String(), "nar_size", p.e.NarSize, "file_size", p.e.FileSize, "compression", p.e.Compression)
	}
	if renamed > 0 {
		if err := syncDir(c.dir); err != nil {
			return fmt.Errorf("cache publish %d paths: %w", len(ps), err)
		}
		c.trace("sync-dir", "")
	}
	t.mark(&t.narinfos)
	return errors.Join(errs...)
}

// barrier makes the contents of files durable.
func (c *Cache) barrier(files []string) error {
	if len(files) > fewFiles {
		if err := syncFS(c.dir); err == nil {
			c.trace("syncfs", "")
			return nil
		} else if !errors.Is(err, errNoSyncfs) {
			return err
		}
	}
	for _, f := range files {
		if err := fsyncFile(f); err != nil {
			return err
		}
		c.trace("fsync", f)
	}
	return nil
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

func fsyncFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("sync %s: %w", name, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", name, err)
	}
	return nil
}

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
			os.Remove(p.nar)
			if p.info != "" {
				os.Remove(p.info)
			}
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
					errs[i] = c.prepareInfo(spooled[i])
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
	return &pending{sp: sp, e: e, nar: s.path, url: narURL(e.FileHash, e.Compression)}, nil
}
