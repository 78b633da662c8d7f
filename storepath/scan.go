package storepath

import (
	"slices"

	"github.com/gbc-farm/gbc/nixhash"
)

// base32Byte marks the bytes of Nix's base32 alphabet.
var base32Byte = func() (t [256]bool) {
	for i := 0; i < len(nixhash.Alphabet); i++ {
		t[nixhash.Alphabet[i]] = true
	}
	return t
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
	found  map[string]bool
	tail   []byte // last HashLen-1 bytes seen, for matches across writes
}

// NewScanner searches for the hash parts of candidates (full store paths;
// anything that does not parse is ignored).
func NewScanner(candidates []string) *Scanner {
	s := &Scanner{byHash: make(map[string]string, len(candidates)), found: map[string]bool{}}
	for _, c := range candidates {
		if sp, err := Parse(c); err == nil {
			s.byHash[sp.HashPart] = sp.String()
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

// search checks each window of HashLen base32 bytes, skipping past any
// non-base32 byte as Nix does.
func (s *Scanner) search(b []byte) {
	const k = HashLen
	for i := 0; i+k <= len(b); {
		j := i + k - 1
		for j >= i && base32Byte[b[j]] {
			j--
		}
		if j >= i {
			i = j + 1
			continue
		}
		if p, ok := s.byHash[string(b[i:i+k])]; ok {
			s.found[p] = true
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
