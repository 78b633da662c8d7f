package compression

import (
	"bytes"
	"io"
	"testing"
)

// FuzzLzipReader: the lzip framing is our own code over untrusted
// substitute downloads; it must fail cleanly, never panic.
func FuzzLzipReader(f *testing.F) {
	f.Add([]byte("LZIP\x01\x0c"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := NewReader(bytes.NewReader(in), "lzip")
		if err != nil {
			t.Fatal(err)
		}
		// Bounded: a small input may legitimately expand a lot.
		io.CopyN(io.Discard, r, 64<<20)
	})
}
