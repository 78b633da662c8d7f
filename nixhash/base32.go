// Package nixhash holds the hash renderings shared by Nix and Guix: Nix's
// base32 alphabet, "algo:digest" strings, hex and SRI forms.
package nixhash

import (
	"fmt"
)

// Alphabet is Nix's base32 alphabet; it omits e, o, t and u.
const Alphabet = "0123456789abcdfghijklmnpqrsvwxyz"

var decodeTable = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(Alphabet); i++ {
		t[Alphabet[i]] = int8(i)
	}
	return t
}()

// EncodedLen is the number of base32 characters for n input bytes.
func EncodedLen(n int) int { return (n*8 + 4) / 5 }

// DecodedLen is the number of bytes that n base32 characters decode to.
func DecodedLen(n int) int { return n * 5 / 8 }

// Base32 encodes b the way Nix does: the bytes are read as a little-endian
// bit string and the last character holds the lowest bits of byte 0.
func Base32(b []byte) string {
	n := EncodedLen(len(b))
	out := make([]byte, n)
	for i := 0; i < n; i++ {
		bit := (n - 1 - i) * 5
		j, k := bit/8, uint(bit%8)
		c := int(b[j]) >> k
		if j+1 < len(b) {
			c |= int(b[j+1]) << (8 - k)
		}
		out[i] = Alphabet[c&0x1f]
	}
	return string(out)
}

// DecodeBase32 reverses Base32. It rejects characters outside the alphabet
// and set bits beyond the decoded length, so every byte string has exactly
// one accepted encoding.
func DecodeBase32(s string) ([]byte, error) {
	n := DecodedLen(len(s))
	if EncodedLen(n) != len(s) {
		return nil, fmt.Errorf("nix base32: invalid length %d", len(s))
	}
	out := make([]byte, n)
	for i := 0; i < len(s); i++ {
		d := decodeTable[s[i]]
		if d < 0 {
			return nil, fmt.Errorf("nix base32: invalid character %q at offset %d", s[i], i)
		}
		bit := (len(s) - 1 - i) * 5
		j, k := bit/8, uint(bit%8)
		out[j] |= byte(int(d) << k)
		carry := int(d) >> (8 - k)
		if j+1 < n {
			out[j+1] |= byte(carry)
		} else if carry != 0 {
			return nil, fmt.Errorf("nix base32: non-zero padding bits in %q", s)
		}
	}
	return out, nil
}
