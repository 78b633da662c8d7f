package nar

import "io"

// asyncWriter hands chunks to another goroutine that writes them to w, so
// that reading files (syscalls, page-cache copies) overlaps with whatever w
// does, typically SHA-256 on another core. w must not fail: its errors are
// not reported (HashingWriter never fails).
type asyncWriter struct {
	free chan []byte
	work chan []byte
	done chan struct{}
}

func newAsyncWriter(w io.Writer, chunks, size int) *asyncWriter {
	a := &asyncWriter{
		free: make(chan []byte, chunks),
		work: make(chan []byte, chunks),
		done: make(chan struct{}),
	}
	for range chunks {
		a.free <- make([]byte, 0, size)
	}
	go func() {
		defer close(a.done)
		for b := range a.work {
			w.Write(b)
			a.free <- b[:0]
		}
	}()
	return a
}

func (a *asyncWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		b := <-a.free
		k := copy(b[:cap(b)], p)
		a.work <- b[:k]
		p = p[k:]
	}
	return n, nil
}

// Close waits until everything written has reached w.
func (a *asyncWriter) Close() {
	close(a.work)
	<-a.done
}
