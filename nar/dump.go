package nar

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/gbc-farm/gbc/nixhash"
)

const bufSize = 256 << 10

// dumpSlack is room for the NAR framing around a single file's contents.
const dumpSlack = 4 << 10

// Dump writes the NAR serialisation of the file, directory or symlink at
// path to w, byte-identical to `nix-store --dump path`. Symlinks are
// recorded, never followed; only the owner-executable bit of regular files
// is kept, as Nix does. Sockets, devices and FIFOs are refused.
func Dump(w io.Writer, path string) error {
	size := bufSize
	if st, err := os.Lstat(path); err == nil && st.Mode().IsRegular() && st.Size() < bufSize-dumpSlack {
		// A small file (a .drv, typically) needs a small buffer: a
		// fresh 256 KiB one per call dominated publishing many of them.
		size = int(st.Size()) + dumpSlack
	}
	d := dumper{w: bufio.NewWriterSize(w, size)}
	d.str(magic)
	if err := d.node(path, 0); err != nil {
		return err
	}
	if d.err != nil {
		return fmt.Errorf("nar dump %s: write: %w", path, d.err)
	}
	if err := d.w.Flush(); err != nil {
		return fmt.Errorf("nar dump %s: write: %w", path, err)
	}
	return nil
}

// HashPath returns the SHA-256 and length of Dump(path) without keeping the
// archive in memory; it is what `nix-hash --type sha256 path` computes.
func HashPath(path string) (nixhash.Hash, int64, error) {
	hw := NewHashingWriter()
	aw := newAsyncWriter(hw, 4, bufSize)
	err := Dump(aw, path)
	aw.Close()
	if err != nil {
		return nixhash.Hash{}, 0, err
	}
	return hw.Sum(), hw.Size(), nil
}

type dumper struct {
	w   *bufio.Writer
	err error // first write error; later writes are skipped
	num [8]byte
}

func (d *dumper) int(n uint64) {
	if d.err != nil {
		return
	}
	putUint64(d.num[:], n)
	_, d.err = d.w.Write(d.num[:])
}

var zeros [8]byte

func (d *dumper) pad(n uint64) {
	if p := padLen(n); p > 0 && d.err == nil {
		_, d.err = d.w.Write(zeros[:p])
	}
}

func (d *dumper) str(s string) {
	d.int(uint64(len(s)))
	if d.err == nil {
		_, d.err = d.w.WriteString(s)
	}
	d.pad(uint64(len(s)))
}

func (d *dumper) node(path string, depth int) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("nar dump: %w", err)
	}
	d.str("(")
	d.str("type")
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		d.str("regular")
		if mode&0o100 != 0 {
			d.str("executable")
			d.str("")
		}
		d.str("contents")
		if err := d.contents(path, fi.Size()); err != nil {
			return err
		}
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(path)
		if err != nil {
			return fmt.Errorf("nar dump: %w", err)
		}
		d.str("symlink")
		d.str("target")
		d.str(target)
	case mode.IsDir():
		if depth >= MaxDepth {
			return fmt.Errorf("nar dump %s: directory nesting deeper than %d", path, MaxDepth)
		}
		d.str("directory")
		names, err := readNames(path)
		if err != nil {
			return err
		}
		for _, name := range names {
			d.str("entry")
			d.str("(")
			d.str("name")
			d.str(name)
			d.str("node")
			if err := d.node(filepath.Join(path, name), depth+1); err != nil {
				return err
			}
			d.str(")")
		}
	default:
		return fmt.Errorf("nar dump %s: unsupported file type %v", path, mode.Type())
	}
	d.str(")")
	if d.err != nil {
		return fmt.Errorf("nar dump %s: write: %w", path, d.err)
	}
	return nil
}

// readNames lists a directory sorted bytewise, the order NAR requires
// (Go string comparison is bytewise, unlike a locale collation).
func readNames(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("nar dump: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("nar dump: read directory %s: %w", path, err)
	}
	slices.Sort(names)
	return names, nil
}

func (d *dumper) contents(path string, size int64) error {
	d.int(uint64(size))
	if d.err != nil {
		return fmt.Errorf("nar dump %s: write: %w", path, d.err)
	}
	// Checked again on the open file: a FIFO or device swapped in after
	// the Lstat must neither block the dump nor feed it without end.
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("nar dump: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return fmt.Errorf("nar dump: %w", err)
	} else if !st.Mode().IsRegular() {
		return fmt.Errorf("nar dump %s: no longer a regular file (%v)", path, st.Mode().Type())
	}
	n, err := io.CopyN(d.w, f, size)
	if err == io.EOF {
		return fmt.Errorf("nar dump %s: file shrank while reading: got %d of %d bytes", path, n, size)
	}
	if err != nil {
		return fmt.Errorf("nar dump %s: copy contents: %w", path, err)
	}
	d.pad(uint64(size))
	return nil
}
