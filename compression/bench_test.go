package compression

import (
	"bytes"
	"io"
	"testing"
)

// benchData is a NAR-like mix: half compressible text, half random bytes.
func benchData() []byte {
	s := sample()
	var b bytes.Buffer
	for b.Len() < 32<<20 {
		b.Write(s)
	}
	return b.Bytes()
}

func benchmarkCompress(b *testing.B, name string) {
	data := benchData()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		w, err := NewWriter(io.Discard, name)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func benchmarkDecompress(b *testing.B, name string) {
	data := benchData()
	var c bytes.Buffer
	w, _ := NewWriter(&c, name)
	w.Write(data)
	w.Close()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(c.Bytes()), name)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}

func BenchmarkZstdCompress(b *testing.B)   { benchmarkCompress(b, "zstd") }
func BenchmarkZstdDecompress(b *testing.B) { benchmarkDecompress(b, "zstd") }
func BenchmarkXzCompress(b *testing.B)     { benchmarkCompress(b, "xz") }
func BenchmarkXzDecompress(b *testing.B)   { benchmarkDecompress(b, "xz") }
