package storepath

import (
	"slices"

	"github.com/gbc-farm/gbc/nixhash"
)

// base32Byte marks the bytes of Nix's base32 alphabet; base32Value is
// each one's digit value.
var base32Byte, base32Value = func() (t [256]bool, v [256]uint32) {
	for i := 0; i < len(nixhash.Alphabet); i++ {
		t[nixhash.Alphabet[i]] = true
		v[nixhash.Alphabet[i]] = uint32(i)
	}
	return t, v
}()

// IsBase32 reports whether every byte of s is in Nix's base32 alphabet.
func IsBase32(s string) bool {
	for i := 0; i < len(s); i++ {
		if !base32Byte[s[i]] {
			return false
		}
	}
	return true
}

// Scanner finds which candidate store paths a NAR refers to by searching
// for their 32-character hash parts, as Nix's RefScanSink does: a reference
// is any occurrence of the hash part, wherever it is in the archive.
// It is an io.Writer: feed it the NAR (names, contents and symlink
// targets are all searched).
type Scanner struct {
	byHash map[string]string // hash part → full path
	// prefixes has a bit for the first four characters of every hash
	// part (32⁴ bits, 128 KiB), so nearly every window of base32 text is
	// rejected without hashing 32 bytes for a map lookup, even with
	// thousands of candidates.
	prefixes *[1 << 20 / 64]uint64
	found    map[string]bool
	tail     []byte // last HashLen-1 bytes seen, for matches across writes
}

// prefixOf is the first four characters of a base32 window as a number.
func prefixOf(b []byte) uint32 {
	return base32Value[b[0]]<<15 | base32Value[b[1]]<<10 | base32Value[b[2]]<<5 | base32Value[b[3]]
}

// NewScanner searches for the hash parts of candidates (full store paths;
// anything that does not parse is ignored).
func NewScanner(candidates []string) *Scanner {
	s := &Scanner{byHash: make(map[string]string, len(candidates)), found: map[string]bool{}, prefixes: new([1 << 20 / 64]uint64)}
	for _, c := range candidates {
		if sp, err := Parse(c); err == nil {
			s.byHash[sp.HashPart] = sp.String()
			p := prefixOf([]byte(sp.HashPart))
			s.prefixes[p/64] |= 1 << (p % 64)
		}
	}
	return s
}

func (s *Scanner) Write(p []byte) (int, error) {
	const k = HashLen
	if len(s.tail) > 0 {
		// Matches that start in the tail and end in p.
		s.search(append(s.tail, p[:min(len(p), k-1)]...))
	}
	s.search(p)
	if len(p) >= k-1 {
		s.tail = append(s.tail[:0], p[len(p)-(k-1):]...)
	} else {
		s.tail = append(s.tail, p...)
		if len(s.tail) > k-1 {
			s.tail = s.tail[len(s.tail)-(k-1):]
		}
	}
	return len(p), nil
}

// search checks every window of HashLen base32 bytes, as Nix does: a
// window is checked from its end, and on a byte outside the alphabet the
// search jumps past it (so binary data is mostly skipped HashLen bytes at
// a time). Unlike Nix it remembers how far the bytes are known to be
// base32, so a long base32 run costs one look per byte, not HashLen.
func (s *Scanner) search(b []byte) {
	const k = HashLen
	if len(s.byHash) == 0 {
		return
	}
	checked := 0 // b[i:checked] are known to be base32
	for i := 0; i+k <= len(b); {
		j := i + k - 1
		for j >= checked && base32Byte[b[j]] {
			j--
		}
		if j >= checked {
			i, checked = j+1, j+1
			continue
		}
		checked = i + k
		w := b[i : i+k]
		if p := prefixOf(w); s.prefixes[p/64]&(1<<(p%64)) != 0 {
			if p, ok := s.byHash[string(w)]; ok {
				s.found[p] = true
			}
		}
		i++
	}
}

// Found returns the referenced paths, sorted.
func (s *Scanner) Found() []string {
	out := make([]string, 0, len(s.found))
	for p := range s.found {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
