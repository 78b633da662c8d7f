package nar

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Restore recreates the tree stored in the NAR read from r at dir, like
// `nix-store --restore dir`. dir must not exist. The tree is built in a
// temporary sibling of dir and renamed into place only once the whole
// archive has been read and validated, so dir either appears complete or
// not at all. Nothing is written outside that temporary directory: entry
// names cannot contain "/" or be ".."; symlinks from the archive are created
// as links and never followed (files are opened O_NOFOLLOW|O_EXCL).
func Restore(r io.Reader, dir string) error {
	dir = filepath.Clean(dir)
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("nar restore: %s already exists", dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("nar restore: %w", err)
	}
	parent, base := filepath.Split(dir)
	if parent == "" {
		parent = "."
	}
	tmp, err := os.MkdirTemp(parent, "."+base+".restore-")
	if err != nil {
		return fmt.Errorf("nar restore: create temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp) // only the leftovers of a failed restore
	root := filepath.Join(tmp, "root")
	if err := restoreInto(r, root); err != nil {
		return err
	}
	if err := renameNoReplace(root, dir); err != nil {
		return fmt.Errorf("nar restore: move into place: %w", err)
	}
	return nil
}

func restoreInto(r io.Reader, root string) error {
	nr := NewReader(r)
	buf := make([]byte, bufSize)
	for {
		h, err := nr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		// h.Path is "/" or "/name/..." of names checked by the Reader.
		target := root + strings.TrimSuffix(h.Path, "/")
		switch h.Type {
		case TypeDirectory:
			if err := os.Mkdir(target, 0o777); err != nil {
				return fmt.Errorf("nar restore: %w", err)
			}
		case TypeSymlink:
			if err := os.Symlink(h.LinkTarget, target); err != nil {
				return fmt.Errorf("nar restore: %w", err)
			}
		case TypeRegular, TypeExecutable:
			perm := os.FileMode(0o666)
			if h.Type == TypeExecutable {
				perm = 0o777
			}
			if err := writeFile(target, perm, nr, buf); err != nil {
				return err
			}
		}
	}
	return nr.expectEOF()
}

func writeFile(path string, perm os.FileMode, src io.Reader, buf []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, perm)
	if err != nil {
		return fmt.Errorf("nar restore: %w", err)
	}
	// Hide *os.File's ReadFrom so the copy reads from the NAR reader in
	// big chunks instead of probing for splice/copy_file_range.
	if _, err := io.CopyBuffer(struct{ io.Writer }{f}, src, buf); err != nil {
		f.Close()
		return fmt.Errorf("nar restore %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("nar restore: %w", err)
	}
	return nil
}

// renameNoReplace renames without replacing an existing dir (plain rename
// would silently replace an empty directory created meanwhile).
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		if _, err := os.Lstat(to); err == nil {
			return fmt.Errorf("%s already exists", to)
		}
		return os.Rename(from, to)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}
