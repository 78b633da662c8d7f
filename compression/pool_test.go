package compression

import (
	"bytes"
	"io"
	"testing"
)

// A reused encoder or decoder must behave exactly like a new one: same
// frames out, same bytes back, nothing carried over from the last stream.
func TestPoolReuse(t *testing.T) {
	p := NewPool(2)
	inputs := [][]byte{sample(), []byte("short"), bytes.Repeat([]byte("abc"), 100000), {}}
	for round := range 3 {
		for i, in := range inputs {
			var fresh, pooled bytes.Buffer
			w, _ := NewWriter(&fresh, "zstd")
			w.Write(in)
			w.Close()
			pw, err := p.NewWriter(&pooled, "zstd")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pw.Write(in); err != nil {
				t.Fatal(err)
			}
			if err := pw.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(fresh.Bytes(), pooled.Bytes()) {
				t.Fatalf("round %d input %d: pooled encoder output differs from a new encoder's", round, i)
			}
			if _, err := pw.Write([]byte("x")); err == nil {
				t.Fatalf("write after Close succeeded")
			}
			r, err := p.NewReader(bytes.NewReader(pooled.Bytes()), "zstd")
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			r.Close()
			r.Close() // twice is harmless
			if err != nil || !bytes.Equal(got, in) {
				t.Fatalf("round %d input %d: round trip %d bytes, %v; want %d bytes", round, i, len(got), err, len(in))
			}
		}
	}
	// A corrupt stream must not poison the decoder for the next caller.
	r, _ := p.NewReader(bytes.NewReader([]byte("\x28\xb5\x2f\xfdgarbage")), "zstd")
	if _, err := io.ReadAll(r); err == nil {
		t.Fatal("corrupt frame decoded")
	}
	r.Close()
	var ok bytes.Buffer
	w, _ := p.NewWriter(&ok, "zstd")
	w.Write([]byte("fine"))
	w.Close()
	r, _ = p.NewReader(&ok, "zstd")
	if got, err := io.ReadAll(r); err != nil || string(got) != "fine" {
		t.Fatalf("after a corrupt stream: %q, %v", got, err)
	}
	// Other compressions and a nil pool pass through.
	var nilPool *Pool
	for _, name := range []string{"zstd", "gzip", "none"} {
		var b bytes.Buffer
		w, err := nilPool.NewWriter(&b, name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("data"))
		w.Close()
		r, err := p.NewReader(&b, name)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := io.ReadAll(r); string(got) != "data" {
			t.Fatalf("%s: %q", name, got)
		}
	}
}

func BenchmarkZstdSmallNew(b *testing.B) {
	data := sample()[:2000]
	for b.Loop() {
		w, _ := NewWriter(io.Discard, "zstd")
		w.Write(data)
		w.Close()
	}
}

func BenchmarkZstdSmallPooled(b *testing.B) {
	data := sample()[:2000]
	p := NewPool(0)
	for b.Loop() {
		w, _ := p.NewWriter(io.Discard, "zstd")
		w.Write(data)
		w.Close()
	}
}
