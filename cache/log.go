package cache

import (
	"context"
	"fmt"
	"io"

	"github.com/gbc-farm/gbc/compression"
)

// logTruncated ends a log cut at MaxLogSize.
const logTruncated = "\n[gbc: log truncated at %d bytes]\n"

// WriteLog stores the build log of drvPath at log/<drv basename>, where
// Nix's `nix log --store <cache-url>` fetches it (Nix 2.8 asks for exactly
// that name, with no Accept-Encoding, and decodes the body according to the
// response's Content-Encoding). The file is compressed with the cache's
// compression; Handler serves it with the matching Content-Encoding. A log
// longer than MaxLogSize is cut there with a note. A later log for the same
// derivation (a rebuild) replaces the earlier one. Checked with real Nix 2.8
// (TestRealNixDerivationClosureAndLog): `nix log --store http://…` shows the
// zstd-stored log served with Content-Encoding: zstd. A plain static server
// (nginx) must add that header for log/ itself, as Hydra's S3 metadata does.
func (c *Cache) WriteLog(ctx context.Context, drvPath string, r io.Reader) error {
	sp, err := c.parsePath(drvPath)
	if err != nil {
		return fmt.Errorf("cache log: %w", err)
	}
	if !sp.IsDerivation() {
		return fmt.Errorf("cache log: %s is not a .drv path", drvPath)
	}
	defer c.enter(sp.HashPart)()
	tmp, err := c.store.Create(ctx)
	if err != nil {
		return fmt.Errorf("cache log %s: %w", drvPath, err)
	}
	defer tmp.Discard()
	cw, err := compression.NewWriter(tmp, c.opts.Compression)
	if err != nil {
		return fmt.Errorf("cache log %s: %w", drvPath, err)
	}
	g := &guardWriter{ctx: ctx, limit: c.opts.MaxLogSize, w: cw}
	n, err := io.Copy(g, io.LimitReader(r, c.opts.MaxLogSize))
	if err != nil {
		cw.Close()
		return fmt.Errorf("cache log %s: after %d bytes: %w", drvPath, n, err)
	}
	if n == c.opts.MaxLogSize {
		var probe [1]byte
		if m, _ := io.ReadFull(r, probe[:]); m > 0 {
			fmt.Fprintf(cw, logTruncated, c.opts.MaxLogSize)
		}
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("cache log %s: compress: %w", drvPath, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cache log %s: %w", drvPath, err)
	}
	if err := c.store.Sync(ctx, tmp); err != nil {
		return fmt.Errorf("cache log %s: %w", drvPath, err)
	}
	if err := c.store.Place(ctx, Placement{Upload: tmp, Key: "log/" + sp.Base(), Encoding: c.opts.Compression}); err != nil {
		return fmt.Errorf("cache log %s: %w", drvPath, err)
	}
	return nil
}
