package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
)

// A bucket upload the cache writes itself (Create) streams: its bytes are
// held in memory up to one part; an object that stays within one part is
// sent with a single PUT when it is placed, a larger one goes as a
// multipart upload to a temp object under tempDir as its parts fill, is
// completed by Close and, when placed, copied by the object store itself
// to its key (no byte crosses the coordinator twice) and the temp object
// deleted. Up to partsInFlight parts are sent at once while the next one
// fills. So nothing is written to the coordinator's disk and at most
// partsInFlight+1 parts per upload are in its memory — and no more than
// S3Config.MaxBufferBytes for all uploads together: an upload that would
// go over sends what it holds as a part when that is large enough for
// one, and otherwise holds the rest of its part in a spool file.
//
// An interrupted upload never becomes an object under a key: its
// multipart upload is aborted (Discard, or Clean at the next start) and a
// completed temp object deleted.

const (
	// tempDir is where streamed uploads' temp objects live, under the
	// store's prefix. Never a key a narinfo names; List of "" skips it
	// (a common prefix), gc never looks there.
	tempDir = "_gbc-uploads/"
	// minPart is S3's smallest part (but the last).
	minPart = 5 << 20
	// defaultStreamPart is a streamed upload's part size unless
	// S3Config.PartSize asks for more.
	defaultStreamPart = 8 << 20
	// maxParts is S3's limit of parts in one upload.
	maxParts = 10000
	// maxCopy is the largest object one server-side CopyObject may copy;
	// larger ones are copied part by part.
	maxCopy = 5 << 30
	// DefaultMaxBufferBytes bounds the memory all streamed uploads of a
	// store hold together.
	DefaultMaxBufferBytes = 256 << 20
)

// memBudget counts the bytes streamed uploads hold in memory.
type memBudget struct {
	mu    sync.Mutex
	used  int64
	limit int64
}

func (b *memBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

func (b *memBudget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// Buffered is what the store's streamed uploads hold in memory now.
func (s *S3Store) Buffered() int64 {
	s.mem.mu.Lock()
	defer s.mem.mu.Unlock()
	return s.mem.used
}

// s3Upload is a streamed upload (see above).
type s3Upload struct {
	s   *S3Store
	ctx context.Context // every request the upload makes

	buf   []byte   // the current part, in memory
	held  int64    // bytes of buf's capacity taken from the store's budget
	spill *os.File // the current part, on disk, when memory ran short
	spilt int64    // bytes in spill

	tmp      string // temp object name, once a multipart upload started
	uploadID string
	parts    []minio.CompletePart // sent
	nparts   int                  // parts started (sent, or in flight)
	fly      []*partInFlight      // parts being sent (oldest first) while the next fills
	spare    []byte               // the buffer of the last part sent, for reuse
	size     int64                // bytes written

	closed    bool // Close called (a multipart upload is then complete)
	done      bool // placed or discarded
	err       error
	completed bool // the temp object exists
}

func (s *S3Store) newUpload(ctx context.Context) *s3Upload {
	return &s3Upload{s: s, ctx: context.WithoutCancel(ctx)}
}

// partSize is the size of part n (from 1): the store's part size for the
// first 2000 parts, then doubling every 2000, so an upload of up to
// 31 × 2000 parts' worth fits in S3's 10,000 parts.
func (u *s3Upload) partSize(n int) int64 {
	base := int64(defaultStreamPart)
	if p := int64(u.s.cfg.PartSize); p > base {
		base = p
	}
	return base << ((n - 1) / 2000)
}

func (u *s3Upload) partLen() int64 { return int64(len(u.buf)) + u.spilt }

func (u *s3Upload) Write(p []byte) (int, error) {
	if u.err != nil {
		return 0, u.err
	}
	if u.closed || u.done {
		return 0, errors.New("s3 store: write to a closed upload")
	}
	written := 0
	for len(p) > 0 {
		want := u.partSize(u.nparts + 1)
		n := min(int64(len(p)), want-u.partLen())
		if err := u.add(p[:n]); err != nil {
			u.err = err
			return written, err
		}
		written += int(n)
		p = p[n:]
		u.size += n
		if u.partLen() == want {
			if err := u.sendPart(); err != nil {
				u.err = err
				return written, err
			}
		}
	}
	return written, nil
}

// add appends b to the current part: in memory while the budget allows,
// else — after sending what is held as a part when it is big enough for
// one — in the spill file.
func (u *s3Upload) add(b []byte) error {
	if u.spill == nil {
		need := int64(len(u.buf)+len(b)) - u.held
		if need <= 0 || u.s.mem.take(need) {
			if need > 0 {
				u.held += need
			}
			u.buf = append(u.buf, b...)
			return nil
		}
		if len(u.buf) >= minPart {
			if err := u.sendPart(); err != nil {
				return err
			}
			return u.add(b)
		}
		f, err := os.CreateTemp(u.s.cfg.SpoolDir, tmpPrefix+"s3-part-")
		if err != nil {
			return fmt.Errorf("s3 store: spill a part (memory budget of %d bytes in use): %w", u.s.mem.limit, err)
		}
		if _, err := f.Write(u.buf); err != nil {
			f.Close()
			os.Remove(f.Name())
			return fmt.Errorf("s3 store: spill a part: %w", err)
		}
		u.spill, u.spilt = f, int64(len(u.buf))
		u.buf = u.buf[:0]
	}
	if _, err := u.spill.Write(b); err != nil {
		return fmt.Errorf("s3 store: spill a part: %w", err)
	}
	u.spilt += int64(len(b))
	return nil
}

// partInFlight is a part being sent. Up to partsInFlight are in flight per
// upload while the next fills, so the agent's writes and the part PUTs
// overlap, and one upload is not held to the speed of one PUT at a time.
type partInFlight struct {
	done  chan struct{}
	part  minio.CompletePart
	err   error
	held  int64    // budget bytes its buffer holds
	buf   []byte   // its buffer (reused for a later part)
	spill *os.File // or its spill file
}

// partsInFlight bounds the parts of one upload sent at once.
const partsInFlight = 4

// sendPart starts sending the current part (starting the multipart upload
// first), once fewer than partsInFlight are in flight.
func (u *s3Upload) sendPart() error {
	core := minio.Core{Client: u.s.cli}
	if u.uploadID == "" {
		u.tmp = u.s.prefix + tempDir + randomName()
		id, err := core.NewMultipartUpload(u.ctx, u.s.cfg.Bucket, u.tmp, minio.PutObjectOptions{})
		if err != nil {
			return fmt.Errorf("s3 store: start upload %s: %w", u.tmp, err)
		}
		u.uploadID = id
	}
	for len(u.fly) >= partsInFlight {
		if err := u.waitOne(); err != nil {
			return err
		}
	}
	n := u.nparts + 1
	if n > maxParts {
		return fmt.Errorf("s3 store: upload %s: over %d parts (%d bytes)", u.tmp, maxParts, u.size)
	}
	var r io.Reader = bytes.NewReader(u.buf)
	size := int64(len(u.buf))
	if u.spill != nil {
		if _, err := u.spill.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("s3 store: upload %s part %d: %w", u.tmp, n, err)
		}
		r, size = u.spill, u.spilt
	}
	f := &partInFlight{done: make(chan struct{}), held: u.held, buf: u.buf, spill: u.spill}
	u.nparts, u.fly = n, append(u.fly, f)
	u.buf, u.held, u.spill, u.spilt = u.spare[:0], 0, nil, 0
	u.spare = nil
	tmp, id := u.tmp, u.uploadID
	go func() {
		defer close(f.done)
		p, err := core.PutObjectPart(u.ctx, u.s.cfg.Bucket, tmp, id, n, r, size, minio.PutObjectPartOptions{})
		if err != nil {
			f.err = fmt.Errorf("s3 store: upload %s part %d (%d bytes): %w", tmp, n, size, err)
			return
		}
		f.part = minio.CompletePart{PartNumber: p.PartNumber, ETag: p.ETag}
	}()
	return nil
}

// waitOne waits for the oldest part in flight and takes its buffer back.
func (u *s3Upload) waitOne() error {
	f := u.fly[0]
	<-f.done
	u.fly = u.fly[1:]
	u.s.mem.give(f.held)
	if f.spill != nil {
		f.spill.Close()
		os.Remove(f.spill.Name())
	}
	u.spare = f.buf
	if f.err != nil {
		return f.err
	}
	// In part order: parts are started, and waited for, in order.
	u.parts = append(u.parts, f.part)
	return nil
}

// wait waits for every part in flight; the first error is returned.
func (u *s3Upload) wait() error {
	var first error
	for len(u.fly) > 0 {
		if err := u.waitOne(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (u *s3Upload) dropSpill() {
	if u.spill != nil {
		u.spill.Close()
		os.Remove(u.spill.Name())
		u.spill, u.spilt = nil, 0
	}
}

// release waits for the part in flight and gives the parts' memory back.
func (u *s3Upload) release() {
	u.wait()
	u.s.mem.give(u.held)
	u.held = 0
	u.buf, u.spare = nil, nil
	u.dropSpill()
}

// Close ends the upload; a multipart one (or one whose part went to
// disk) is sent to its end and completed: the temp object then exists. A
// small one stays in memory until it is placed.
func (u *s3Upload) Close() error {
	if u.closed || u.done {
		return u.err
	}
	u.closed = true
	if u.err == nil && (u.uploadID != "" || u.spill != nil) {
		if u.partLen() > 0 {
			u.err = u.sendPart()
		}
		if u.err == nil {
			u.err = u.wait()
		}
		if u.err == nil {
			core := minio.Core{Client: u.s.cli}
			if _, err := core.CompleteMultipartUpload(u.ctx, u.s.cfg.Bucket, u.tmp, u.uploadID, u.parts, minio.PutObjectOptions{}); err != nil {
				u.err = fmt.Errorf("s3 store: complete upload %s (%d parts): %w", u.tmp, len(u.parts), err)
			} else {
				u.completed = true
			}
		}
	}
	if u.completed || u.err != nil {
		u.release()
	}
	return u.err
}

// Discard drops the upload: aborts its multipart upload or deletes its
// temp object.
func (u *s3Upload) Discard() {
	if u.done {
		return
	}
	u.done = true
	u.release()
	ctx, cancel := context.WithTimeout(u.ctx, 30*time.Second)
	defer cancel()
	switch {
	case u.completed:
		if err := u.s.cli.RemoveObject(ctx, u.s.cfg.Bucket, u.tmp, minio.RemoveObjectOptions{}); err != nil {
			u.s.log.Warn("delete a dropped upload's temp object (Clean removes it at the next start)", "object", u.tmp, "err", err)
		}
	case u.uploadID != "":
		core := minio.Core{Client: u.s.cli}
		if err := core.AbortMultipartUpload(ctx, u.s.cfg.Bucket, u.tmp, u.uploadID); err != nil {
			u.s.log.Warn("abort a dropped upload (Clean aborts it at the next start)", "object", u.tmp, "err", err)
		}
	}
}

// place puts the closed upload under obj: one PUT from memory, or a
// server-side copy of the temp object, which is then deleted.
func (u *s3Upload) place(ctx context.Context, obj string, opts minio.PutObjectOptions) error {
	if !u.completed {
		if _, err := u.s.cli.PutObject(ctx, u.s.cfg.Bucket, obj, bytes.NewReader(u.buf), int64(len(u.buf)), opts); err != nil {
			return fmt.Errorf("s3 store: put %s: %w", obj, err)
		}
		u.done = true
		u.release()
		return nil
	}
	if err := u.s.copyObject(ctx, u.tmp, obj, u.size, opts); err != nil {
		return err
	}
	u.done = true
	if err := u.s.cli.RemoveObject(ctx, u.s.cfg.Bucket, u.tmp, minio.RemoveObjectOptions{}); err != nil {
		// Placed; the temp object is only garbage now.
		u.s.log.Warn("delete a placed upload's temp object (Clean removes it at the next start)", "object", u.tmp, "err", err)
	}
	return nil
}

// copyObject copies src to dst inside the bucket, with dst's headers from
// opts: one CopyObject, or part by part (UploadPartCopy) for objects over
// the single-copy limit.
func (s *S3Store) copyObject(ctx context.Context, src, dst string, size int64, opts minio.PutObjectOptions) error {
	core := minio.Core{Client: s.cli}
	if size <= s.copyLimit {
		h := copyHeaders(opts)
		h["x-amz-metadata-directive"] = "REPLACE"
		if _, err := core.CopyObject(ctx, s.cfg.Bucket, src, s.cfg.Bucket, dst, h, minio.CopySrcOptions{}, minio.PutObjectOptions{}); err != nil {
			return fmt.Errorf("s3 store: copy %s to %s: %w", src, dst, err)
		}
		return nil
	}
	id, err := core.NewMultipartUpload(ctx, s.cfg.Bucket, dst, opts)
	if err != nil {
		return fmt.Errorf("s3 store: copy %s to %s: start: %w", src, dst, err)
	}
	var parts []minio.CompletePart
	for off, n := int64(0), 1; off < size; off, n = off+s.copyLimit, n+1 {
		length := min(s.copyLimit, size-off)
		p, err := core.CopyObjectPart(ctx, s.cfg.Bucket, src, s.cfg.Bucket, dst, id, n, off, length, nil)
		if err != nil {
			core.AbortMultipartUpload(context.WithoutCancel(ctx), s.cfg.Bucket, dst, id)
			return fmt.Errorf("s3 store: copy %s to %s: part %d (%d+%d): %w", src, dst, n, off, length, err)
		}
		parts = append(parts, p)
	}
	if _, err := core.CompleteMultipartUpload(ctx, s.cfg.Bucket, dst, id, parts, opts); err != nil {
		core.AbortMultipartUpload(context.WithoutCancel(ctx), s.cfg.Bucket, dst, id)
		return fmt.Errorf("s3 store: copy %s to %s: complete: %w", src, dst, err)
	}
	return nil
}

// copyHeaders are the headers a copied object is stored with.
func copyHeaders(opts minio.PutObjectOptions) map[string]string {
	h := map[string]string{}
	if opts.ContentType != "" {
		h["Content-Type"] = opts.ContentType
	}
	if opts.ContentEncoding != "" {
		h["Content-Encoding"] = opts.ContentEncoding
	}
	if opts.CacheControl != "" {
		h["Cache-Control"] = opts.CacheControl
	}
	return h
}

func randomName() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
