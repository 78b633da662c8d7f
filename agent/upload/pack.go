// Package upload turns a store path into a compressed NAR file and sends
// it to the coordinator over SFTP, resuming where an earlier attempt
// stopped.
package upload

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/nixhash"
)

// Packed describes one compressed NAR file in the work dir.
type Packed struct {
	StorePath   string
	File        string // local path of the compressed NAR
	Compression string
	NarHash     nixhash.Hash
	NarSize     int64
	FileHash    nixhash.Hash
	FileSize    int64
}

// Pack serialises storePath as a NAR, compresses it and writes it to
// dst, hashing the NAR and the compressed stream on the way so neither is
// read twice. dst is written under a temporary name and renamed at the
// end, so a crash never leaves a half-written file that looks complete.
func Pack(ctx context.Context, storePath, dst, comp string) (Packed, error) {
	p := Packed{StorePath: storePath, File: dst, Compression: comp}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return p, fmt.Errorf("pack %s: %w", storePath, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	defer tmp.Close()

	fileHash := nar.NewHashingWriter()
	cw, err := compression.NewWriter(io.MultiWriter(tmp, fileHash), comp)
	if err != nil {
		return p, fmt.Errorf("pack %s: %w", storePath, err)
	}
	narHash := nar.NewHashingWriter()
	// ctxWriter makes a long dump stop promptly when the build is cancelled.
	if err := nar.Dump(ctxWriter{ctx, io.MultiWriter(cw, narHash)}, storePath); err != nil {
		return p, fmt.Errorf("pack %s: dump NAR: %w", storePath, err)
	}
	if err := cw.Close(); err != nil {
		return p, fmt.Errorf("pack %s: finish %s stream: %w", storePath, comp, err)
	}
	if err := tmp.Sync(); err != nil {
		return p, fmt.Errorf("pack %s: sync %s: %w", storePath, tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return p, fmt.Errorf("pack %s: close %s: %w", storePath, tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return p, fmt.Errorf("pack %s: %w", storePath, err)
	}
	p.NarHash, p.NarSize = narHash.Sum(), narHash.Size()
	p.FileHash, p.FileSize = fileHash.Sum(), fileHash.Size()
	return p, nil
}

type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
