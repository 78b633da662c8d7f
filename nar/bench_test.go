package nar

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// benchTree builds ~72 MB: 2000 small files (4 KiB average) in 40
// directories plus 4 files of 16 MiB, a mix like a typical package output.
func benchTree(b *testing.B) (string, int64) {
	b.Helper()
	root := filepath.Join(b.TempDir(), "tree")
	rng := rand.New(rand.NewPCG(7, 7))
	buf := make([]byte, 16<<20)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	var total int64
	for d := range 40 {
		dir := filepath.Join(root, fmt.Sprintf("d%02d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := range 50 {
			n := rng.IntN(8 << 10)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", f)), buf[:n], 0o644); err != nil {
				b.Fatal(err)
			}
			total += int64(n)
		}
	}
	for i := range 4 {
		if err := os.WriteFile(filepath.Join(root, fmt.Sprintf("big%d", i)), buf, 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(len(buf))
	}
	return root, total
}

func BenchmarkHashPath(b *testing.B) {
	root, _ := benchTree(b)
	_, size, err := HashPath(root) // warm the page cache
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := HashPath(root); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDump(b *testing.B) {
	root, _ := benchTree(b)
	_, size, _ := HashPath(root)
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if err := Dump(io.Discard, root); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	root, _ := benchTree(b)
	var buf bytes.Buffer
	if err := Dump(&buf, root); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := Validate(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHashPathSerial is HashPath without the hashing goroutine, to
// show what the overlap buys.
func BenchmarkHashPathSerial(b *testing.B) {
	root, _ := benchTree(b)
	_, size, _ := HashPath(root)
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if err := Dump(NewHashingWriter(), root); err != nil {
			b.Fatal(err)
		}
	}
}
