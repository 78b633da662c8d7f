package cache

import (
	"fmt"
	"os"
	"path/filepath"
)

// tmpPrefix marks files being written. The handler never serves them (their
// names do not match any served pattern) and Open removes leftovers.
const tmpPrefix = ".tmp-"

// writeFileAtomic writes b to path via a synced temp file and a rename, so
// readers see the old file or the whole new one.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), tmpPrefix)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := finishTemp(tmp, path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// finishTemp makes a fully written temp file durable and renames it to
// path; it closes tmp. World-readable: the cache is public by design.
func finishTemp(tmp *os.File, path string) error {
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename to %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
