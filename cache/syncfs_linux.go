package cache

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

var errNoSyncfs = errors.New("syncfs not available")

// syncFS flushes the whole filesystem holding dir: one journal commit for
// every file a batch wrote, where an fsync per file costs one each.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return errNoSyncfs
		}
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}
