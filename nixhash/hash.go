package nixhash

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
)

// Algo names a hash algorithm as Nix spells it.
type Algo string

const (
	MD5    Algo = "md5"
	SHA1   Algo = "sha1"
	SHA256 Algo = "sha256"
	SHA512 Algo = "sha512"
)

// Size is the digest length in bytes, or 0 for an unknown algorithm.
func (a Algo) Size() int {
	switch a {
	case MD5:
		return md5.Size
	case SHA1:
		return sha1.Size
	case SHA256:
		return sha256.Size
	case SHA512:
		return sha512.Size
	}
	return 0
}

// New returns a fresh hasher for a, or an error for an unknown algorithm.
func (a Algo) New() (hash.Hash, error) {
	switch a {
	case MD5:
		return md5.New(), nil
	case SHA1:
		return sha1.New(), nil
	case SHA256:
		return sha256.New(), nil
	case SHA512:
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("unknown hash algorithm %q", string(a))
}

// Hash is a digest together with its algorithm.
type Hash struct {
	Algo   Algo
	Digest []byte
}

// NewSHA256 wraps a SHA-256 digest.
func NewSHA256(d [32]byte) Hash { return Hash{Algo: SHA256, Digest: d[:]} }

// String renders "algo:base32", the form narinfo files use.
func (h Hash) String() string { return string(h.Algo) + ":" + Base32(h.Digest) }

// Hex renders the digest as lowercase hex (the form in .drv files and the daemon).
func (h Hash) Hex() string { return hex.EncodeToString(h.Digest) }

// SRI renders "algo-base64".
func (h Hash) SRI() string { return string(h.Algo) + "-" + base64.StdEncoding.EncodeToString(h.Digest) }

// Equal reports whether both hashes have the same algorithm and digest.
func (h Hash) Equal(o Hash) bool {
	return h.Algo == o.Algo && string(h.Digest) == string(o.Digest)
}

// IsZero reports whether h is unset.
func (h Hash) IsZero() bool { return h.Algo == "" && len(h.Digest) == 0 }

// Parse reads "algo:digest" where digest is base32, hex or base64, or an
// SRI "algo-base64" string, checking the digest length for the algorithm.
func Parse(s string) (Hash, error) {
	var algo, rest string
	if i := strings.IndexByte(s, ':'); i >= 0 {
		algo, rest = s[:i], s[i+1:]
	} else if i := strings.IndexByte(s, '-'); i >= 0 {
		algo, rest = s[:i], s[i+1:]
		a := Algo(algo)
		if a.Size() == 0 {
			return Hash{}, fmt.Errorf("parse hash %q: unknown algorithm %q", s, algo)
		}
		d, err := base64.StdEncoding.DecodeString(rest)
		if err != nil || len(d) != a.Size() {
			return Hash{}, fmt.Errorf("parse hash %q: bad SRI digest", s)
		}
		return Hash{Algo: a, Digest: d}, nil
	} else {
		return Hash{}, fmt.Errorf("parse hash %q: missing algorithm prefix", s)
	}
	return ParseDigest(Algo(algo), rest)
}

// ParseDigest reads a digest of a known algorithm in base32, hex or base64.
func ParseDigest(a Algo, s string) (Hash, error) {
	size := a.Size()
	if size == 0 {
		return Hash{}, fmt.Errorf("parse hash: unknown algorithm %q", string(a))
	}
	var (
		d   []byte
		err error
	)
	switch len(s) {
	case EncodedLen(size):
		d, err = DecodeBase32(s)
	case hex.EncodedLen(size):
		d, err = hex.DecodeString(s)
	case base64.StdEncoding.EncodedLen(size):
		d, err = base64.StdEncoding.DecodeString(s)
	default:
		return Hash{}, fmt.Errorf("parse hash: %s digest %q has wrong length %d", a, s, len(s))
	}
	if err != nil {
		return Hash{}, fmt.Errorf("parse hash: %s digest %q: %w", a, s, err)
	}
	if len(d) != size {
		// unpadded base64 of the right length can decode to one byte more
		return Hash{}, fmt.Errorf("parse hash: %s digest %q decodes to %d bytes, want %d", a, s, len(d), size)
	}
	return Hash{Algo: a, Digest: d}, nil
}

// CompressHash folds a digest into size bytes by XOR, as Nix does to make
// the 20-byte hash part of a store path.
func CompressHash(d []byte, size int) []byte {
	out := make([]byte, size)
	for i, b := range d {
		out[i%size] ^= b
	}
	return out
}
