// Package storepath parses, validates and computes Nix/Guix store paths
// (docs/formats.md §2). It is pure: no I/O, and it works for any store directory
// (/nix/store, /gnu/store, ...).
package storepath

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/nixhash"
)

const (
	// HashLen is the number of base32 characters in a store path's hash part
	// (20 bytes after folding).
	HashLen = 32
	// MaxNameLen is Nix's limit on the name part; longer names make the
	// basename exceed what the daemon accepts.
	MaxNameLen = 211
	// MaxDirLen bounds the store directory so a hostile path cannot make us
	// hash or keep arbitrarily long strings.
	MaxDirLen = 1024
)

// StorePath is a parsed store path such as
// /nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple.
type StorePath struct {
	StoreDir string // "/nix/store", no trailing slash
	HashPart string // 32 Nix base32 characters
	Name     string // what follows the dash
}

// String renders the full path.
func (p StorePath) String() string { return p.StoreDir + "/" + p.HashPart + "-" + p.Name }

// Base is the path without the store directory: "<hash>-<name>".
func (p StorePath) Base() string { return p.HashPart + "-" + p.Name }

// IsDerivation reports whether the path names a .drv file.
func (p StorePath) IsDerivation() bool { return strings.HasSuffix(p.Name, ".drv") }

// Parse splits and validates a full store path. It rejects anything Nix would
// reject (bad hash characters, bad name characters, a name starting with a
// period or longer than 211 bytes) and store directories that are not clean
// absolute paths.
func Parse(p string) (StorePath, error) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return StorePath{}, fmt.Errorf("store path %q: not absolute", text.Truncate(p, 256))
	}
	dir, base := p[:i], p[i+1:]
	if err := ValidateStoreDir(dir); err != nil {
		return StorePath{}, fmt.Errorf("store path %q: %w", text.Truncate(p, 256), err)
	}
	sp, err := ParseBase(base)
	if err != nil {
		return StorePath{}, fmt.Errorf("store path %q: %w", text.Truncate(p, 256), err)
	}
	sp.StoreDir = dir
	return sp, nil
}

// ParseBase validates "<hash>-<name>" (a narinfo reference, say) and returns
// a StorePath with an empty StoreDir.
func ParseBase(base string) (StorePath, error) {
	if len(base) < HashLen+2 {
		return StorePath{}, fmt.Errorf("basename %q too short for a hash part and a name", text.Truncate(base, 256))
	}
	h, sep, name := base[:HashLen], base[HashLen], base[HashLen+1:]
	for j := 0; j < len(h); j++ {
		if !isBase32(h[j]) {
			return StorePath{}, fmt.Errorf("hash part %q: invalid character %q at offset %d", h, h[j], j)
		}
	}
	if sep != '-' {
		return StorePath{}, fmt.Errorf("basename %q: expected '-' after the %d-character hash part, found %q", text.Truncate(base, 256), HashLen, sep)
	}
	if err := ValidateName(name); err != nil {
		return StorePath{}, err
	}
	return StorePath{HashPart: h, Name: name}, nil
}

// ValidateName checks the name part of a store path: 1..211 bytes of
// A-Za-z0-9+-._?= not starting with a period.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty store path name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("store path name %q is %d bytes, limit %d", text.Truncate(name, 256), len(name), MaxNameLen)
	case name[0] == '.':
		return fmt.Errorf("store path name %q starts with a period", name)
	}
	for j := 0; j < len(name); j++ {
		if !nameChar(name[j]) {
			return fmt.Errorf("store path name %q: invalid character %q at offset %d", name, name[j], j)
		}
	}
	return nil
}

// isBase32 is membership in nixhash.Alphabet without a search per byte:
// digits and lowercase letters except e, o, t, u.
func isBase32(c byte) bool {
	switch {
	case '0' <= c && c <= '9':
		return true
	case 'a' <= c && c <= 'z':
		return c != 'e' && c != 'o' && c != 't' && c != 'u'
	}
	return false
}

func nameChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("+-._?=", c) >= 0
}

// ValidateStoreDir accepts a clean absolute directory other than "/".
func ValidateStoreDir(dir string) error {
	switch {
	case dir == "" || dir[0] != '/':
		return fmt.Errorf("store directory %q is not absolute", text.Truncate(dir, 256))
	case dir == "/":
		return fmt.Errorf("store directory must not be the root directory")
	case len(dir) > MaxDirLen:
		return fmt.Errorf("store directory is %d bytes, limit %d", len(dir), MaxDirLen)
	case path.Clean(dir) != dir:
		return fmt.Errorf("store directory %q is not a clean path", dir)
	case strings.IndexByte(dir, 0) >= 0:
		return fmt.Errorf("store directory %q contains a NUL byte", dir)
	}
	return nil
}

// Make computes storeDir/hash-name for a path type and inner hash as in
// docs/formats.md §2: sha256("type:sha256:<hex inner>:storeDir:name") folded to 20
// bytes. Callers must pass a valid name; Make does not check it.
func Make(storeDir, typ string, inner []byte, name string) string {
	s := typ + ":sha256:" + hex.EncodeToString(inner) + ":" + storeDir + ":" + name
	sum := sha256.Sum256([]byte(s))
	return storeDir + "/" + nixhash.Base32(nixhash.CompressHash(sum[:], 20)) + "-" + name
}

func withRefs(typ string, refs []string) string {
	sorted := slices.Clone(refs)
	slices.Sort(sorted)
	var b strings.Builder
	b.WriteString(typ)
	for _, r := range sorted {
		b.WriteByte(':')
		b.WriteString(r)
	}
	return b.String()
}

// MakeTextPath is the path of a text file added with references refs (full
// store paths): a .drv file (refs = inputSrcs ∪ inputDrvs),
// builtins.toFile, AddTextToStore.
func MakeTextPath(storeDir, name string, contents []byte, refs []string) string {
	sum := sha256.Sum256(contents)
	return Make(storeDir, withRefs("text", refs), sum[:], name)
}

// MakeOutputPath is the path of input-addressed output outputName of a
// derivation called drvName, given its masked hashDerivationModulo.
func MakeOutputPath(storeDir, outputName, drvName string, hashModulo []byte) string {
	return Make(storeDir, "output:"+outputName, hashModulo, OutputPathName(drvName, outputName))
}

// OutputPathName is the name part of an output's path: the derivation name
// for "out", "name-output" otherwise.
func OutputPathName(drvName, outputName string) string {
	if outputName == "out" {
		return drvName
	}
	return drvName + "-" + outputName
}

// MakeFixedOutputPath is the path of a fixed-output derivation's output or
// of a path added by hash. Recursive SHA-256 is a "source" path (with refs);
// everything else hashes the "fixed:out:" descriptor, which cannot carry
// references.
func MakeFixedOutputPath(storeDir, name string, recursive bool, h nixhash.Hash, refs []string) string {
	if recursive && h.Algo == nixhash.SHA256 {
		return Make(storeDir, withRefs("source", refs), h.Digest, name)
	}
	r := ""
	if recursive {
		r = "r:"
	}
	inner := sha256.Sum256([]byte("fixed:out:" + r + string(h.Algo) + ":" + h.Hex() + ":"))
	return Make(storeDir, "output:out", inner[:], name)
}
