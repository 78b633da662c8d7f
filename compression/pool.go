package compression

import (
	"fmt"
	"io"
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// Pool reuses zstd encoders and decoders across streams. Setting one up
// allocates several MiB of tables and window buffers, which dominates the
// cost of compressing a small NAR such as a .drv; a Reset encoder produces
// the same frames as a new one. Other compressions are cheap to set up and
// are created per stream. A nil *Pool behaves like NewWriter/NewReader.
//
// The pool is bounded (a channel, not a sync.Pool): a zstd encoder or
// decoder with concurrency > 1 holds goroutines until Close, so one dropped
// by the garbage collector unclosed would leak them. Streams beyond the
// bound get a fresh coder that is closed when they end.
type Pool struct {
	enc chan *zstd.Encoder
	dec chan *zstd.Decoder
}

// NewPool keeps up to size idle encoders and as many decoders (size ≤ 0:
// twice GOMAXPROCS).
func NewPool(size int) *Pool {
	if size <= 0 {
		size = 2 * runtime.GOMAXPROCS(0)
	}
	return &Pool{enc: make(chan *zstd.Encoder, size), dec: make(chan *zstd.Decoder, size)}
}

// NewWriter is NewWriter with a pooled zstd encoder. Close flushes the
// stream and returns the encoder to the pool; the writer must not be used
// after Close.
func (p *Pool) NewWriter(w io.Writer, name string) (io.WriteCloser, error) {
	if p == nil || name != "zstd" {
		return NewWriter(w, name)
	}
	select {
	case enc := <-p.enc:
		enc.Reset(w)
		return &pooledEncoder{enc: enc, p: p}, nil
	default:
	}
	wc, err := NewWriter(w, name)
	if err != nil {
		return nil, err
	}
	return &pooledEncoder{enc: wc.(*zstd.Encoder), p: p}, nil
}

type pooledEncoder struct {
	enc *zstd.Encoder
	p   *Pool
}

func (e *pooledEncoder) Write(b []byte) (int, error) {
	if e.enc == nil {
		return 0, fmt.Errorf("compression: write to a closed zstd writer")
	}
	return e.enc.Write(b)
}

func (e *pooledEncoder) ReadFrom(r io.Reader) (int64, error) {
	if e.enc == nil {
		return 0, fmt.Errorf("compression: write to a closed zstd writer")
	}
	return e.enc.ReadFrom(r)
}

func (e *pooledEncoder) Close() error {
	enc := e.enc
	if enc == nil {
		return nil
	}
	e.enc = nil
	err := enc.Close()
	// Drop the reference to the caller's writer before parking; Reset
	// also clears any error state.
	enc.Reset(io.Discard)
	select {
	case e.p.enc <- enc:
	default:
		enc.Close()
	}
	return err
}

// NewReader is NewReader with a pooled zstd decoder. Close returns the
// decoder to the pool; the reader must not be used after Close.
func (p *Pool) NewReader(r io.Reader, name string) (io.ReadCloser, error) {
	if p == nil || name != "zstd" {
		return NewReader(r, name)
	}
	select {
	case dec := <-p.dec:
		if err := dec.Reset(r); err != nil {
			dec.Close()
			return nil, fmt.Errorf("compression: zstd reader: %w", err)
		}
		return &pooledDecoder{dec: dec, p: p}, nil
	default:
	}
	rc, err := NewReader(r, name)
	if err != nil {
		return nil, err
	}
	return &pooledDecoder{dec: rc.(zstdReadCloser).Decoder, p: p}, nil
}

type pooledDecoder struct {
	dec *zstd.Decoder
	p   *Pool
}

func (d *pooledDecoder) Read(b []byte) (int, error) {
	if d.dec == nil {
		return 0, fmt.Errorf("compression: read from a closed zstd reader")
	}
	return d.dec.Read(b)
}

func (d *pooledDecoder) WriteTo(w io.Writer) (int64, error) {
	if d.dec == nil {
		return 0, fmt.Errorf("compression: read from a closed zstd reader")
	}
	return d.dec.WriteTo(w)
}

func (d *pooledDecoder) Close() error {
	dec := d.dec
	if dec == nil {
		return nil
	}
	d.dec = nil
	// Reset stops any stream goroutines and drops the caller's reader; a
	// decoder that cannot be reset is closed instead of parked.
	if err := dec.Reset(emptyReader{}); err != nil {
		dec.Close()
		return nil
	}
	select {
	case d.p.dec <- dec:
	default:
		dec.Close()
	}
	return nil
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, io.EOF }
