package derivation

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/gbc-farm/gbc/storepath"
)

// ReadFile reads and parses a .drv file. It follows symlinks, refuses
// anything but a regular file (a FIFO, a device, a socket) before opening
// it, opens without blocking, and refuses files over MaxSize before
// reading them.
func ReadFile(path string) (*Derivation, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read derivation: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("read derivation %s: not a regular file (%s)", path, fileType(st.Mode()))
	}
	return readRegular(path, 0)
}

// ReadStoreFile reads and parses the .drv at store path p as seen under
// root ("" is the real filesystem; with "/tmp/x", /nix/store/a.drv is read
// from /tmp/x/nix/store/a.drv). It must be a regular file of at most
// MaxSize bytes; a symlink is followed only to a file directly inside the
// same store directory. Nothing else is opened: a FIFO would block the
// reader and a device (/dev/zero) would feed it without end.
func ReadStoreFile(root, p string) (*Derivation, error) {
	sp, err := storepath.Parse(p)
	if err != nil {
		return nil, fmt.Errorf("read derivation: %w", err)
	}
	if !sp.IsDerivation() {
		return nil, fmt.Errorf("read derivation: %s is not a .drv path", p)
	}
	storeDir := sp.StoreDir
	if root != "" {
		storeDir = filepath.Join(root, sp.StoreDir)
	}
	file := filepath.Join(storeDir, sp.Base())
	st, err := os.Lstat(file)
	if err != nil {
		return nil, fmt.Errorf("read derivation: %w", err)
	}
	if st.Mode()&os.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(file)
		if err != nil {
			return nil, fmt.Errorf("read derivation %s: resolve symlink: %w", p, err)
		}
		realStore, err := filepath.EvalSymlinks(storeDir)
		if err != nil {
			return nil, fmt.Errorf("read derivation %s: resolve store directory: %w", p, err)
		}
		if filepath.Dir(target) != realStore {
			return nil, fmt.Errorf("read derivation %s: a symlink to %s, which is not in the store %s", p, target, sp.StoreDir)
		}
		if st, err = os.Lstat(target); err != nil {
			return nil, fmt.Errorf("read derivation %s: %w", p, err)
		}
		file = target
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("read derivation %s: not a regular file (%s)", p, fileType(st.Mode()))
	}
	// O_NOFOLLOW: file was checked above and must not become a symlink
	// in between.
	return readRegular(file, unix.O_NOFOLLOW)
}

// readRegular opens path without blocking (so that a FIFO swapped in
// after the caller's check cannot hang the reader) and without making a
// terminal the controlling one, checks again on the open file that it is
// regular and at most MaxSize bytes, and parses it.
func readRegular(path string, flags int) (*Derivation, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|flags, 0)
	if err != nil {
		return nil, fmt.Errorf("read derivation: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read derivation %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("read derivation %s: not a regular file (%s)", path, fileType(st.Mode()))
	}
	if st.Size() > MaxSize {
		return nil, fmt.Errorf("read derivation %s: %d bytes, larger than %d", path, st.Size(), MaxSize)
	}
	// Bounded again while reading: a file may grow after the stat.
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read derivation %s: %w", path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("read derivation %s: larger than %d bytes", path, MaxSize)
	}
	d, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// fileType names a non-regular file's type for an error.
func fileType(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "named pipe"
	case m&os.ModeCharDevice != 0:
		return "character device"
	case m&os.ModeDevice != 0:
		return "block device"
	case m&os.ModeSocket != 0:
		return "socket"
	case m.IsDir():
		return "directory"
	case m&os.ModeSymlink != 0:
		return "symlink"
	}
	return m.Type().String()
}
