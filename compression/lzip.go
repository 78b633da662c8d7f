package compression

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

const (
	lzipHeaderLen  = 6
	lzipTrailerLen = 20
	// lzip's own limit on the dictionary (512 MiB) bounds decoder memory.
	lzipMaxDict = 1 << 29
)

// lzipReader decodes a sequence of lzip members, checking each trailer.
type lzipReader struct {
	br  *bufio.Reader
	off int64 // compressed bytes consumed, for error messages and member size
	cur *lzma.Reader
	crc hash.Hash32
	n   uint64 // uncompressed bytes of the current member
	// memberStart is the offset of the current member's header.
	memberStart int64
	members     int
	err         error
}

func newLzipReader(r io.Reader) io.ReadCloser {
	return &lzipReader{br: bufio.NewReaderSize(r, 64<<10)}
}

func (z *lzipReader) Close() error { return nil }

// countingByteReader serves a synthetic classic-LZMA header, then the
// member's raw LZMA data byte by byte from the shared bufio.Reader, so the
// decoder never reads past the end-of-stream marker into the trailer.
type countingByteReader struct {
	pre []byte
	z   *lzipReader
}

func (c *countingByteReader) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	if len(p) == 0 {
		return 0, nil
	}
	b, err := c.ReadByte()
	if err != nil {
		return 0, err
	}
	p[0] = b
	return 1, nil
}

func (c *countingByteReader) ReadByte() (byte, error) {
	if len(c.pre) > 0 {
		b := c.pre[0]
		c.pre = c.pre[1:]
		return b, nil
	}
	b, err := c.z.br.ReadByte()
	if err == nil {
		c.z.off++
	}
	return b, err
}

func (z *lzipReader) fail(format string, args ...any) error {
	z.err = fmt.Errorf("lzip: offset %d: "+format, append([]any{z.off}, args...)...)
	return z.err
}

// startMember reads a member header; it returns io.EOF at a clean end.
func (z *lzipReader) startMember() error {
	var h [lzipHeaderLen]byte
	n, err := io.ReadFull(z.br, h[:])
	if err == io.EOF && z.members > 0 {
		return io.EOF
	}
	z.memberStart = z.off
	z.off += int64(n)
	if err != nil {
		return z.fail("truncated member header: %w", io.ErrUnexpectedEOF)
	}
	if string(h[:4]) != "LZIP" {
		return z.fail("bad magic %q", h[:4])
	}
	if h[4] != 1 {
		return z.fail("unsupported version %d", h[4])
	}
	exp := uint(h[5] & 0x1f)
	if exp < 12 || exp > 29 {
		return z.fail("invalid dictionary size byte %#x", h[5])
	}
	dict := uint32(1) << exp
	dict -= (dict / 16) * uint32(h[5]>>5)
	if dict < 1<<12 {
		return z.fail("invalid dictionary size byte %#x", h[5])
	}
	var pre [lzma.HeaderLen]byte
	pre[0] = 0x5d // lc=3 lp=0 pb=2: (pb*5+lp)*9+lc
	binary.LittleEndian.PutUint32(pre[1:], dict)
	binary.LittleEndian.PutUint64(pre[5:], ^uint64(0)) // size unknown: EOS marker
	cfg := lzma.ReaderConfig{DictCap: lzipMaxDict}
	r, err := cfg.NewReader(&countingByteReader{pre: pre[:], z: z})
	if err != nil {
		return z.fail("lzma: %w", err)
	}
	z.cur, z.n, z.members = r, 0, z.members+1
	if z.crc == nil {
		z.crc = crc32.NewIEEE()
	}
	z.crc.Reset()
	return nil
}

func (z *lzipReader) endMember() error {
	var t [lzipTrailerLen]byte
	n, err := io.ReadFull(z.br, t[:])
	z.off += int64(n)
	if err != nil {
		return z.fail("truncated member trailer: %w", io.ErrUnexpectedEOF)
	}
	if got, want := z.crc.Sum32(), binary.LittleEndian.Uint32(t[0:]); got != want {
		return z.fail("CRC mismatch: data %08x, trailer %08x", got, want)
	}
	if want := binary.LittleEndian.Uint64(t[4:]); z.n != want {
		return z.fail("data size %d, trailer says %d", z.n, want)
	}
	if want := binary.LittleEndian.Uint64(t[12:]); uint64(z.off-z.memberStart) != want {
		return z.fail("member size %d, trailer says %d", z.off-z.memberStart, want)
	}
	z.cur = nil
	return nil
}

func (z *lzipReader) Read(p []byte) (int, error) {
	for {
		if z.err != nil {
			return 0, z.err
		}
		if z.cur == nil {
			if err := z.startMember(); err != nil {
				if err == io.EOF {
					z.err = io.EOF
				}
				return 0, err
			}
		}
		n, err := z.cur.Read(p)
		z.crc.Write(p[:n])
		z.n += uint64(n)
		if err == io.EOF {
			if err := z.endMember(); err != nil {
				return n, err
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return n, z.fail("lzma: %w", err)
		}
		return n, nil
	}
}
