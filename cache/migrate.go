package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/gbc-farm/gbc/narinfo"
	"github.com/gbc-farm/gbc/nixhash"
)

// MigrateStats counts what Migrate did.
type MigrateStats struct {
	Copied, Skipped, Bytes int64
	// Bad are objects left behind: a NAR whose bytes do not hash to its
	// name, a narinfo that does not parse or whose NAR is missing.
	Bad []string
}

// Migrate copies every object of a cache from one store to another (cache
// migrate --from file:DIR --to s3://…), in the order that keeps the
// destination a valid cache at every moment: NARs, then logs, then
// narinfos, each narinfo only once the NAR it names is in the destination.
// Every NAR is checked on the way: its bytes must hash to the file hash in
// its name. It is resumable: an object already in the destination with the
// same size (a narinfo: the same bytes) is skipped, so running it again
// after an interruption copies only the rest. nix-cache-info is not copied
// (a cache opened on the destination writes its own).
func Migrate(ctx context.Context, from, to Store, log *slog.Logger) (MigrateStats, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var st MigrateStats
	for _, prefix := range []string{"nar/", "log/"} {
		err := from.List(ctx, prefix, func(oi ObjectInfo) error {
			if prefix == "nar/" && !isNarName(strings.TrimPrefix(oi.Key, prefix)) {
				return nil
			}
			if have, err := to.Stat(ctx, oi.Key); err == nil && have.Size == oi.Size {
				st.Skipped++
				return nil
			} else if err != nil && !isNotExist(err) {
				return err
			}
			ok, err := copyObject(ctx, from, to, oi, prefix == "nar/")
			if err != nil {
				return fmt.Errorf("copy %s: %w", oi.Key, err)
			}
			if !ok {
				st.Bad = append(st.Bad, oi.Key)
				log.WarnContext(ctx, "NAR does not hash to its name; not copied", "key", oi.Key)
				return nil
			}
			st.Copied++
			st.Bytes += oi.Size
			return nil
		})
		if err != nil {
			return st, fmt.Errorf("cache migrate %s to %s: %w", from, to, err)
		}
	}
	err := from.List(ctx, "", func(oi ObjectInfo) error {
		h, ok := strings.CutSuffix(oi.Key, ".narinfo")
		if !ok || !isHashPart(h) {
			return nil
		}
		b, err := readSmall(ctx, from, oi.Key, maxNarinfoSize)
		if isNotExist(err) {
			return nil // collected since it was listed
		}
		if err != nil {
			return err
		}
		if cur, err := readSmall(ctx, to, oi.Key, maxNarinfoSize); err == nil && bytes.Equal(cur, b) {
			st.Skipped++
			return nil
		}
		ni, err := narinfo.Parse(b)
		if err != nil {
			st.Bad = append(st.Bad, oi.Key)
			log.WarnContext(ctx, "narinfo does not parse; not copied", "key", oi.Key, "err", err)
			return nil
		}
		if _, err := to.Stat(ctx, ni.URL); err != nil {
			if !isNotExist(err) {
				return err
			}
			st.Bad = append(st.Bad, oi.Key)
			log.WarnContext(ctx, "narinfo's NAR is not in the destination; not copied", "key", oi.Key, "nar", ni.URL)
			return nil
		}
		if err := putBytes(ctx, to, oi.Key, b); err != nil {
			return fmt.Errorf("copy %s: %w", oi.Key, err)
		}
		st.Copied++
		st.Bytes += int64(len(b))
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("cache migrate %s to %s: %w", from, to, err)
	}
	return st, nil
}

// copyObject streams one object into the destination; a NAR must hash to
// its name (false if not, and nothing is placed).
func copyObject(ctx context.Context, from, to Store, oi ObjectInfo, isNar bool) (bool, error) {
	src, err := from.Open(ctx, oi.Key)
	if err != nil {
		return false, err
	}
	defer src.Close()
	up, err := to.Create(ctx)
	if err != nil {
		return false, err
	}
	defer up.Discard()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(up, h), src)
	if err != nil {
		return false, err
	}
	if n != oi.Size {
		return false, fmt.Errorf("read %d bytes, listed as %d", n, oi.Size)
	}
	if err := up.Close(); err != nil {
		return false, err
	}
	if isNar {
		name := strings.TrimPrefix(oi.Key, "nar/")
		if got := nixhash.Base32(h.Sum(nil)); !strings.HasPrefix(name, got+".nar") {
			return false, nil
		}
	}
	if err := to.Sync(ctx, up); err != nil {
		return false, err
	}
	p := Placement{Upload: up, Key: oi.Key, Keep: isNar}
	if strings.HasPrefix(oi.Key, "log/") {
		p.Encoding = logEncoding(ctx, from, oi.Key)
	}
	if err := to.Place(ctx, p); err != nil {
		return false, err
	}
	return true, nil
}

// logEncoding guesses a stored log's compression from its first bytes
// (logs carry no suffix), so a bucket serves it with its Content-Encoding.
func logEncoding(ctx context.Context, st Store, key string) string {
	o, err := st.Open(ctx, key)
	if err != nil {
		return ""
	}
	defer o.Close()
	var magic [4]byte
	if _, err := io.ReadFull(o, magic[:]); err != nil {
		return ""
	}
	switch {
	case bytes.Equal(magic[:], []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd"
	case magic[0] == 0x1f && magic[1] == 0x8b:
		return "gzip"
	}
	return ""
}
