// Package nar reads, writes, hashes and restores Nix archives (NAR), the
// canonical serialisation of a store path that Nix hashes for NarHash and
// ships in binary caches. Everything streams: file contents are never held
// in memory whole, and every length read from input is bounded before use.
//
// Grammar (each token is a length-prefixed, zero-padded string):
//
//	nar       = "nix-archive-1" node
//	node      = "(" "type" ( regular | symlink | directory ) ")"
//	regular   = "regular" [ "executable" "" ] "contents" <bytes>
//	symlink   = "symlink" "target" <target>
//	directory = "directory" *( "entry" "(" "name" <name> "node" node ")" )
package nar

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"

	"github.com/gbc-farm/gbc/nixhash"
)

const magic = "nix-archive-1"

// Limits applied when reading. They exist so hostile input cannot make us
// allocate without bound; they are generous against what Linux can store
// (NAME_MAX 255, PATH_MAX 4096) so real archives are never refused.
const (
	// MaxNameLen bounds a directory entry name.
	MaxNameLen = 1024
	// MaxTargetLen bounds a symlink target (PATH_MAX).
	MaxTargetLen = 4096
	// MaxDepth bounds directory nesting; the root is depth 0.
	MaxDepth = 1024
	// maxTokenLen bounds grammar keywords; the longest is "nix-archive-1".
	maxTokenLen = 16
)

// Type is the kind of a node.
type Type int

const (
	TypeRegular Type = iota + 1
	TypeExecutable
	TypeSymlink
	TypeDirectory
)

func (t Type) String() string {
	switch t {
	case TypeRegular:
		return "regular"
	case TypeExecutable:
		return "executable"
	case TypeSymlink:
		return "symlink"
	case TypeDirectory:
		return "directory"
	}
	return fmt.Sprintf("Type(%d)", int(t))
}

// Header describes one node of an archive, in archive order (a directory
// before its entries). Path is "/" for the root and "/a/b" below it, with
// names as raw bytes (not necessarily UTF-8).
type Header struct {
	Path       string
	Type       Type
	Size       int64  // contents length for regular and executable files
	LinkTarget string // for symlinks
}

// Error is a malformed-archive error; Offset is the byte position in the
// archive where the offending token starts.
type Error struct {
	Offset int64
	Path   string
	Msg    string
	Err    error // underlying I/O error, if any
}

func (e *Error) Error() string {
	s := fmt.Sprintf("nar: offset %d", e.Offset)
	if e.Path != "" {
		s += fmt.Sprintf(" (at %q)", e.Path)
	}
	s += ": " + e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

func padLen(n uint64) int { return int((8 - n%8) % 8) }

// HashingWriter counts and SHA-256-hashes what is written to it, so callers
// can compute NarHash/NarSize while sending the bytes elsewhere.
type HashingWriter struct {
	h hash.Hash
	n int64
}

// NewHashingWriter returns an empty HashingWriter.
func NewHashingWriter() *HashingWriter { return &HashingWriter{h: sha256.New()} }

func (w *HashingWriter) Write(p []byte) (int, error) {
	if w.h == nil {
		w.h = sha256.New()
	}
	w.h.Write(p)
	w.n += int64(len(p))
	return len(p), nil
}

// Sum returns the SHA-256 of everything written so far.
func (w *HashingWriter) Sum() nixhash.Hash {
	if w.h == nil {
		w.h = sha256.New()
	}
	var d [sha256.Size]byte
	w.h.Sum(d[:0])
	return nixhash.NewSHA256(d)
}

// Size returns the number of bytes written so far.
func (w *HashingWriter) Size() int64 { return w.n }

func putUint64(b []byte, v uint64) { binary.LittleEndian.PutUint64(b, v) }
