package cache

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/storepath"
)

// ReadDerivation reads a .drv that is in the cache (imported, or published
// from another host's store) and checks that its contents hash to its path.
// The coordinator uses it for derivations its own host store does not hold.
func (c *Cache) ReadDerivation(ctx context.Context, drvPath string) (*derivation.Derivation, error) {
	sp, err := c.parsePath(drvPath)
	if err != nil {
		return nil, fmt.Errorf("cache read derivation: %w", err)
	}
	if !sp.IsDerivation() {
		return nil, fmt.Errorf("cache read derivation: %s is not a .drv", drvPath)
	}
	ni, err := c.Lookup(drvPath)
	if err != nil {
		return nil, fmt.Errorf("cache read derivation: %w", err)
	}
	if !isNarName(filepath.Base(ni.URL)) || filepath.Dir(ni.URL) != "nar" {
		return nil, fmt.Errorf("cache read derivation %s: narinfo URL %q", drvPath, ni.URL)
	}
	f, err := c.store.Open(ctx, ni.URL)
	if err != nil {
		return nil, fmt.Errorf("cache read derivation %s: %w", drvPath, err)
	}
	defer f.Close()
	dec, err := c.zpool.NewReader(f, ni.Compression)
	if err != nil {
		return nil, fmt.Errorf("cache read derivation %s: %w", drvPath, err)
	}
	defer dec.Close()
	nr := nar.NewReader(io.LimitReader(dec, derivation.MaxSize+4096))
	h, err := nr.Next()
	if err != nil {
		return nil, fmt.Errorf("cache read derivation %s: NAR: %w", drvPath, err)
	}
	if h.Type != nar.TypeRegular {
		return nil, fmt.Errorf("cache read derivation %s: NAR holds a %s, want a regular file", drvPath, h.Type)
	}
	b, err := io.ReadAll(io.LimitReader(nr, derivation.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("cache read derivation %s: NAR: %w", drvPath, err)
	}
	d, err := derivation.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("cache read derivation %s: %w", drvPath, err)
	}
	if p, err := d.DrvPath(); err != nil || p != sp.String() {
		return nil, fmt.Errorf("cache read derivation %s: contents hash to %s (%v)", drvPath, p, err)
	}
	return d, ctx.Err()
}

// MissingFromClosure walks the references recorded in the cache from the
// given paths and returns those without a narinfo, so a submission can be
// refused before an agent finds out. At most limit paths are returned.
func (c *Cache) MissingFromClosure(paths []string, limit int) []string {
	seen := map[string]bool{}
	queue := append([]string(nil), paths...)
	var missing []string
	for len(queue) > 0 && len(missing) < limit {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		ni, err := c.Lookup(p)
		if err != nil {
			missing = append(missing, p)
			continue
		}
		for _, r := range ni.References {
			if _, err := storepath.ParseBase(r); err == nil {
				queue = append(queue, c.opts.StoreDir+"/"+r)
			}
		}
	}
	return missing
}
