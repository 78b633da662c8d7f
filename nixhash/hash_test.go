package nixhash

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"
)

func TestBase32Vectors(t *testing.T) {
	sum := sha256.Sum256([]byte("hello\n"))
	one := make([]byte, 20)
	one[0] = 1
	high := make([]byte, 20)
	high[19] = 0x80
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"low bit of byte 0 is the last char", one, "00000000000000000000000000000001"},
		{"high bit of the last byte is the first char", high, "h0000000000000000000000000000000"},
		{"sha256 of hello", sum[:], "00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq"},
		{"empty", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Base32(tc.in); got != tc.want {
				t.Fatalf("Base32 = %q, want %q", got, tc.want)
			}
			back, err := DecodeBase32(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back, tc.in) && len(tc.in) > 0 {
				t.Fatalf("decode = %x, want %x", back, tc.in)
			}
		})
	}
}

func TestDecodeBase32Rejects(t *testing.T) {
	for _, s := range []string{
		"e0000000000000000000000000000000", // e is not in the alphabet
		"000",                              // wrong length
		"z0000000000000000000000000000000000000000000000000000",      // 53 chars
		"w0000000000000000000000000000000000000000000000000000"[:52], // overflow bits set
	} {
		if _, err := DecodeBase32(s); err == nil {
			t.Errorf("DecodeBase32(%q) accepted", s)
		}
	}
}

func TestParseForms(t *testing.T) {
	sum := sha256.Sum256([]byte("hello\n"))
	h := NewSHA256(sum)
	for _, s := range []string{h.String(), "sha256:" + h.Hex(), h.SRI()} {
		got, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q): %v", s, err)
		}
		if !got.Equal(h) {
			t.Fatalf("Parse(%q) = %v", s, got)
		}
	}
	if _, err := Parse("sha256:abc"); err == nil {
		t.Fatal("short digest accepted")
	}
	if _, err := Parse("sha256:" + strings.Repeat("A", 44)); err == nil {
		t.Fatal("44 base64 chars decoding to 33 bytes accepted")
	}
	if _, err := Parse("blake9:00"); err == nil {
		t.Fatal("unknown algorithm accepted")
	}
}

func FuzzBase32RoundTrip(f *testing.F) {
	f.Add([]byte("hello"))
	f.Add(make([]byte, 32))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := Base32(b)
		back, err := DecodeBase32(s)
		if err != nil {
			t.Fatalf("decode own encoding %q: %v", s, err)
		}
		if !bytes.Equal(back, b) && !(len(b) == 0 && len(back) == 0) {
			t.Fatalf("round trip %x -> %q -> %x", b, s, back)
		}
	})
}
