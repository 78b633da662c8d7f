package nar

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReader feeds arbitrary bytes to the Reader: it must never panic or
// allocate without bound, every failure must be a *Error, and whatever it
// accepts must round-trip through Restore and Dump byte for byte.
func FuzzReader(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.nar")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h, n, err := Validate(bytes.NewReader(in))
		if err != nil {
			var ne *Error
			if !errors.As(err, &ne) {
				t.Fatalf("error is not a *nar.Error: %v", err)
			}
			return
		}
		if n != int64(len(in)) {
			t.Fatalf("Validate size %d, input %d", n, len(in))
		}
		// Reading file contents through Read must agree with skipping them.
		nr := NewReader(bytes.NewReader(in))
		for {
			hd, err := nr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("Reader failed on input Validate accepted: %v", err)
			}
			if hd.Type == TypeRegular || hd.Type == TypeExecutable {
				m, err := io.Copy(io.Discard, nr)
				if err != nil || m != hd.Size {
					t.Fatalf("read %d of %d bytes: %v", m, hd.Size, err)
				}
			}
		}
		out := filepath.Join(t.TempDir(), "out")
		if err := Restore(bytes.NewReader(in), out); err != nil {
			// Names the kernel refuses (too long) are acceptable failures.
			return
		}
		var buf bytes.Buffer
		if err := Dump(&buf, out); err != nil {
			t.Fatalf("Dump of restored tree: %v", err)
		}
		if !bytes.Equal(buf.Bytes(), in) {
			t.Fatalf("restore+dump differs from accepted input (hash %s)", h)
		}
	})
}
