package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/gbc-farm/gbc/archive"
	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/nar"
)

// Import reads a `nix-store --export` or `guix archive --export` stream and
// publishes every record: each NAR is checked against the NAR grammar while
// it is compressed into the cache, bounded by MaxNarSize, and published with
// the record's references and deriver. A .drv record must also hash to its
// path. Records before a bad one stay published; the bad one leaves nothing
// behind. Guix record signatures are not checked here: the stream comes from
// an operator the SSH layer has already authorised. It returns the paths
// published (or already present), in stream order.
func (c *Cache) Import(ctx context.Context, r io.Reader) ([]string, error) {
	ar := archive.NewReader(r)
	var done []string
	for i := 0; ; i++ {
		rec, err := ar.Next()
		if errors.Is(err, io.EOF) {
			return done, nil
		}
		if err != nil {
			return done, fmt.Errorf("cache import: record %d: %w", i, err)
		}
		p, err := c.importRecord(ctx, rec)
		if err != nil {
			return done, fmt.Errorf("cache import: record %d (%s): %w", i, p, err)
		}
		done = append(done, p)
	}
}

func (c *Cache) importRecord(ctx context.Context, rec *archive.Record) (string, error) {
	head := &cappedBuffer{max: derivation.MaxSize + 4096}
	s, err := c.spool(ctx, func(w io.Writer) error {
		_, _, err := nar.Validate(io.TeeReader(rec.NAR, w))
		return err
	}, head)
	if err != nil {
		return "", err
	}
	defer s.up.Discard() // no-op once published
	if err := rec.Finish(); err != nil {
		return "", err
	}
	if !rec.NarHash.Equal(s.narHash) || rec.NarSize != s.narSize {
		return rec.Path, fmt.Errorf("NAR hash %s/%d differs from the stream's %s/%d", s.narHash, s.narSize, rec.NarHash, rec.NarSize)
	}
	sp, err := c.parsePath(rec.Path)
	if err != nil {
		return rec.Path, err
	}
	if sp.IsDerivation() {
		if err := checkDrvRecord(sp.String(), head, rec.References); err != nil {
			return rec.Path, err
		}
	}
	e := Entry{
		StorePath: sp.String(), NarHash: s.narHash, NarSize: s.narSize,
		FileHash: s.fileHash, FileSize: s.fileSize, Compression: c.opts.Compression,
		References: rec.References, Deriver: rec.Deriver,
	}
	if err := c.publishEntry(ctx, e, s.up); err != nil {
		return rec.Path, err
	}
	return rec.Path, nil
}

// checkDrvRecord makes sure an imported .drv is what its path says: a text
// path of its contents with its references. Otherwise an importer could plant
// a derivation under another's name.
func checkDrvRecord(path string, head *cappedBuffer, refs []string) error {
	if head.over {
		return fmt.Errorf("derivation NAR larger than %d bytes", head.max)
	}
	nr := nar.NewReader(bytes.NewReader(head.buf.Bytes()))
	h, err := nr.Next()
	if err != nil {
		return fmt.Errorf("derivation NAR: %w", err)
	}
	if h.Type != nar.TypeRegular {
		return fmt.Errorf("derivation NAR holds a %s, want a regular file", h.Type)
	}
	b, err := io.ReadAll(nr)
	if err != nil {
		return fmt.Errorf("derivation NAR: %w", err)
	}
	d, err := derivation.Parse(b)
	if err != nil {
		return err
	}
	p, err := d.DrvPath()
	if err != nil {
		return err
	}
	if p != path {
		return fmt.Errorf("derivation contents hash to %s", p)
	}
	want := d.References()
	got := slices.Sorted(slices.Values(refs))
	if !slices.Equal(slices.Compact(got), want) {
		return fmt.Errorf("record references %v, derivation has %v", refs, want)
	}
	return nil
}

// cappedBuffer keeps the first max bytes written and notes any overflow.
type cappedBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if b.over {
		return len(p), nil
	}
	if b.buf.Len()+len(p) > b.max {
		b.over = true
		b.buf = bytes.Buffer{}
		return len(p), nil
	}
	return b.buf.Write(p)
}
