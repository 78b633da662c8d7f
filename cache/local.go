package cache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/storepath"
)

// spooled is a compressed NAR in an upload of the cache's store, with the
// hashes Publish needs.
type spooled struct {
	up                Upload
	narHash, fileHash nixhash.Hash
	narSize, fileSize int64
}

// errTooLarge is wrapped when a NAR exceeds Options.MaxNarSize.
var errTooLarge = errors.New("NAR exceeds the size limit")

// spool compresses the NAR that produce writes into a new upload of the
// store, hashing both streams on the way. extra (e.g. a reference scanner)
// sees the uncompressed bytes too. The caller discards s.up if it does not
// publish it.
func (c *Cache) spool(ctx context.Context, produce func(w io.Writer) error, extra ...io.Writer) (s spooled, err error) {
	tmp, err := c.store.Create(ctx)
	if err != nil {
		return s, fmt.Errorf("spool: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Discard()
		}
	}()
	fileHW := nar.NewHashingWriter()
	bw, _ := c.bufs.Get().(*bufio.Writer)
	if bw == nil {
		bw = bufio.NewWriterSize(nil, 256<<10)
	}
	// Reused: a fresh 256 KiB buffer per spooled .drv cost more than the
	// rest of publishing it.
	bw.Reset(io.MultiWriter(tmp, fileHW))
	defer func() {
		bw.Reset(nil)
		c.bufs.Put(bw)
	}()
	cw, err := c.zpool.NewWriter(bw, c.opts.Compression)
	if err != nil {
		return s, err
	}
	narHW := nar.NewHashingWriter()
	w := &guardWriter{ctx: ctx, limit: c.opts.MaxNarSize, w: io.MultiWriter(append([]io.Writer{narHW, cw}, extra...)...)}
	if err := produce(w); err != nil {
		cw.Close()
		return s, err
	}
	if err := cw.Close(); err != nil {
		return s, fmt.Errorf("compress: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return s, err
	}
	if err := tmp.Close(); err != nil {
		return s, err
	}
	return spooled{up: tmp, narHash: narHW.Sum(), narSize: narHW.Size(), fileHash: fileHW.Sum(), fileSize: fileHW.Size()}, nil
}

// publishEntry publishes up, a spooled NAR, as e (see Publish); up is
// consumed whatever happens.
func (c *Cache) publishEntry(ctx context.Context, e Entry, up Upload) error {
	sp, err := c.checkEntry(&e)
	if err != nil {
		up.Discard()
		return fmt.Errorf("cache publish %s: %w", e.StorePath, err)
	}
	defer c.enter(c.fenceKeys(sp.HashPart, narURL(e.FileHash, e.Compression), e.References)...)()
	if done, err := c.alreadyPublished(ctx, sp, e.NarHash); done || err != nil {
		up.Discard()
		return err
	}
	return c.publishUpload(ctx, sp, e, up)
}

// guardWriter stops a long dump or import when ctx ends or the NAR grows
// past the limit.
type guardWriter struct {
	ctx   context.Context
	limit int64
	n     int64
	w     io.Writer
}

func (g *guardWriter) Write(p []byte) (int, error) {
	if err := g.ctx.Err(); err != nil {
		return 0, err
	}
	if g.n+int64(len(p)) > g.limit {
		return 0, fmt.Errorf("%w (%d bytes)", errTooLarge, g.limit)
	}
	g.n += int64(len(p))
	return g.w.Write(p)
}

// PublishLocal publishes storePath from this host's filesystem, read at
// root+storePath (root "" is the real filesystem, as for
// derivation.ReadClosure). A .drv's references come from the derivation
// (inputSrcs ∪ inputDrvs), and its path is checked against its contents.
// For other paths the NAR is scanned for the hash parts of candidates (and
// of storePath itself), as Nix scans build outputs; pass every path the
// output could refer to. The deriver is left unknown.
func (c *Cache) PublishLocal(ctx context.Context, storePath, root string, candidates []string) (Entry, error) {
	sp, err := c.parsePath(storePath)
	if err != nil {
		return Entry{}, fmt.Errorf("cache publish local: %w", err)
	}
	fsPath := filepath.Join(root, sp.String())
	e := Entry{StorePath: sp.String(), Compression: c.opts.Compression}
	var extra []io.Writer
	var scan *storepath.Scanner
	if sp.IsDerivation() {
		d, err := derivation.ReadStoreFile(root, sp.String())
		if err != nil {
			return e, fmt.Errorf("cache publish local %s: %w", storePath, err)
		}
		p, err := d.DrvPath()
		if err != nil {
			return e, fmt.Errorf("cache publish local %s: %w", storePath, err)
		}
		if p != sp.String() {
			return e, fmt.Errorf("cache publish local %s: contents hash to %s", storePath, p)
		}
		e.References = d.References()
	} else {
		scan = storepath.NewScanner(append(slices.Clip(candidates), sp.String()))
		extra = append(extra, scan)
	}
	s, err := c.spool(ctx, func(w io.Writer) error { return nar.Dump(w, fsPath) }, extra...)
	if err != nil {
		return e, fmt.Errorf("cache publish local %s: %w", storePath, err)
	}
	if scan != nil {
		e.References = scan.Found()
	}
	e.NarHash, e.NarSize, e.FileHash, e.FileSize = s.narHash, s.narSize, s.fileHash, s.fileSize
	if err := c.publishEntry(ctx, e, s.up); err != nil {
		return e, err
	}
	return e, nil
}

// PublishDerivationClosure publishes every .drv in drvPath's closure and
// every input source with its own reference closure, read from root, so an
// agent with an empty store can substitute all of them, as one batch (see
// PublishDerivationClosures). Paths already in the cache are not read again
// (their recorded references are still followed). It returns every path of
// the closure.
func (c *Cache) PublishDerivationClosure(ctx context.Context, drvPath, root string) ([]string, error) {
	bad, err := c.PublishDerivationClosures(ctx, []string{drvPath}, root)
	if err == nil {
		err = bad[drvPath]
	}
	if err != nil {
		return nil, err
	}
	drvs, err := derivation.ReadClosure(root, drvPath)
	if err != nil {
		return nil, fmt.Errorf("cache publish closure %s: %w", drvPath, err)
	}
	var all, srcs, drvPaths []string
	for p, d := range drvs {
		drvPaths = append(drvPaths, p)
		srcs = append(srcs, d.InputSrcs...)
	}
	slices.Sort(drvPaths)
	slices.Sort(srcs)
	seen := map[string]bool{}
	queue := slices.Compact(srcs)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		all = append(all, p)
		ni, err := c.Lookup(p)
		if err != nil {
			return all, fmt.Errorf("cache publish closure %s: input source: %w", drvPath, err)
		}
		for _, r := range ni.References {
			queue = append(queue, c.opts.StoreDir+"/"+r)
		}
	}
	return append(all, drvPaths...), nil
}

// storeListing lists the store directory as seen under root: the
// candidates a source path could refer to.
func storeListing(root, storeDir string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(root, storeDir))
	if err != nil {
		return nil, fmt.Errorf("list store: %w", err)
	}
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		if _, err := storepath.ParseBase(e.Name()); err == nil {
			out = append(out, storeDir+"/"+e.Name())
		}
	}
	return out, nil
}
