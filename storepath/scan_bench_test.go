package storepath_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/storepath"
)

// BenchmarkVerifyNAR is the coordinator's verification pass over an
// uploaded NAR (coordinator/results.go): nar.Validate parses and hashes
// it, and with candidates > 0 the same stream also goes through a
// storepath.Scanner looking for that many store paths' hash parts (the
// output reference scan). candidates=0 is hashing alone, the baseline;
// bench/refscan.sh prints the ratios.
//
// Two contents: random bytes (few runs of base32 characters, the scanner
// skips ahead) and text made only of base32 characters, the scanner's
// worst case (a lookup at every byte), with some candidates' hash parts
// in it.
func BenchmarkVerifyNAR(b *testing.B) {
	for _, size := range []int{1 << 20, 16 << 20, 64 << 20} {
		for _, content := range []string{"binary", "text"} {
			data := benchNAR(b, size, content)
			for _, n := range []int{0, 10, 1000, 10000} {
				cands := candidates(n)
				b.Run(fmt.Sprintf("size=%dMiB/content=%s/candidates=%d", size>>20, content, n), func(b *testing.B) {
					b.SetBytes(int64(len(data)))
					cpu0 := cpuTime(b)
					ops := 0
					defer func() {
						b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(max(ops, 1)), "cpu-ns/op")
					}()
					for b.Loop() {
						ops++
						var r io.Reader = bytes.NewReader(data)
						var sc *storepath.Scanner
						if n > 0 {
							sc = storepath.NewScanner(cands)
							r = io.TeeReader(r, sc)
						}
						if _, _, err := nar.Validate(r); err != nil {
							b.Fatal(err)
						}
						if sc != nil && content == "text" && len(sc.Found()) == 0 {
							b.Fatal("the scan found none of the hash parts in the text")
						}
					}
				})
			}
		}
	}
}

// cpuTime is the CPU time this process has used. The pass runs on one
// goroutine, so its CPU time per op is its cost even on a machine so
// loaded that the wall time is mostly waiting for a core.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// candidates are n store paths, as a build's input closure would give.
func candidates(n int) []string {
	rng := rand.New(rand.NewPCG(1, 1)) // the same first paths for every n
	out := make([]string, n)
	for i := range out {
		var digest [20]byte
		for j := range digest {
			digest[j] = byte(rng.Uint32())
		}
		out[i] = "/nix/store/" + nixhash.Base32(digest[:]) + fmt.Sprintf("-input-%d", i)
	}
	return out
}

// benchNAR is the NAR of one regular file of size bytes.
func benchNAR(b *testing.B, size int, content string) []byte {
	b.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	buf := make([]byte, size)
	switch content {
	case "binary":
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
	case "text":
		for i := range buf {
			buf[i] = nixhash.Alphabet[rng.IntN(len(nixhash.Alphabet))]
		}
		// Every 64 KiB, one of the first candidates' hash parts (a
		// reference, as in a script or an RPATH).
		refs := candidates(10)
		for off := 0; off+storepath.HashLen <= size; off += 64 << 10 {
			sp, err := storepath.Parse(refs[(off>>16)%len(refs)])
			if err != nil {
				b.Fatal(err)
			}
			copy(buf[off:], sp.HashPart)
		}
	}
	f := filepath.Join(b.TempDir(), "out")
	if err := os.WriteFile(f, buf, 0o644); err != nil {
		b.Fatal(err)
	}
	var out bytes.Buffer
	if err := nar.Dump(&out, f); err != nil {
		b.Fatal(err)
	}
	return out.Bytes()
}
