package compression

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/nixhash"
)

// sample is compressible but not trivial, and larger than the codecs'
// internal blocks so multi-block paths are exercised.
func sample() []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	words := []string{"nix", "store", "derivation", "/nix/store/", "lib", "\x00\x01", "gbc"}
	for b.Len() < 1<<20 {
		if rng.IntN(10) == 0 {
			var r [64]byte
			for i := range r {
				r[i] = byte(rng.Uint32())
			}
			b.Write(r[:])
		}
		b.WriteString(words[rng.IntN(len(words))])
	}
	return b.Bytes()
}

func compress(t *testing.T, name string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func decompress(t *testing.T, name string, data []byte) []byte {
	t.Helper()
	r, err := NewReader(bytes.NewReader(data), name)
	if err != nil {
		t.Fatalf("NewReader(%s): %v", name, err)
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decompress %s: %v", name, err)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	data := sample()
	for _, name := range Names() {
		if !Writable(name) {
			continue
		}
		for _, in := range [][]byte{nil, []byte("x"), data} {
			c := compress(t, name, in)
			if got := decompress(t, name, c); !bytes.Equal(got, in) {
				t.Errorf("%s: round trip of %d bytes gave %d bytes", name, len(in), len(got))
			}
		}
	}
}

func TestNamesAndSuffixes(t *testing.T) {
	want := map[string]string{"zstd": ".zst", "xz": ".xz", "gzip": ".gz", "bzip2": ".bz2", "lzip": ".lz", "none": ""}
	for _, n := range Names() {
		if !Supported(n) {
			t.Errorf("Supported(%q) = false", n)
		}
		if Suffix(n) != want[n] {
			t.Errorf("Suffix(%q) = %q, want %q", n, Suffix(n), want[n])
		}
	}
	if Supported("br") || Supported("") {
		t.Error("unknown names reported as supported")
	}
	if _, err := NewWriter(io.Discard, "bzip2"); err == nil {
		t.Error("NewWriter(bzip2) succeeded")
	}
	if _, err := NewReader(strings.NewReader(""), "rar"); err == nil {
		t.Error("NewReader(rar) succeeded")
	}
}

// tool describes a CLI: args to compress stdin→stdout and to decompress.
var tools = []struct {
	name, bin  string
	comp, dec  []string
	canWriteGo bool
}{
	{"zstd", "zstd", []string{"-q", "-c", "-3"}, []string{"-q", "-d", "-c"}, true},
	{"xz", "xz", []string{"-c", "-6"}, []string{"-d", "-c"}, true},
	{"gzip", "gzip", []string{"-c"}, []string{"-d", "-c"}, true},
	{"bzip2", "bzip2", []string{"-c"}, []string{"-d", "-c"}, false},
	{"lzip", "lzip", []string{"-c"}, []string{"-d", "-c"}, false},
}

func runTool(t *testing.T, bin string, args []string, in []byte) []byte {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", bin, args, err, stderr.String())
	}
	return out
}

func TestAgainstCLI(t *testing.T) {
	data := sample()
	for _, tc := range tools {
		t.Run(tc.name, func(t *testing.T) {
			bin, err := exec.LookPath(tc.bin)
			if err != nil {
				t.Skipf("%s not installed", tc.bin)
			}
			for _, in := range [][]byte{{}, []byte("hello\n"), data} {
				if got := decompress(t, tc.name, runTool(t, bin, tc.comp, in)); !bytes.Equal(got, in) {
					t.Errorf("reading %s output of %d bytes gave %d bytes", tc.bin, len(in), len(got))
				}
				if tc.canWriteGo {
					if got := runTool(t, bin, tc.dec, compress(t, tc.name, in)); !bytes.Equal(got, in) {
						t.Errorf("%s -d of our %d bytes gave %d bytes", tc.bin, len(in), len(got))
					}
				}
			}
		})
	}
}

// TestLzip covers what the CLI round trip does not: several members,
// small and large dictionaries, and corrupted trailers.
func TestLzip(t *testing.T) {
	bin, err := exec.LookPath("lzip")
	if err != nil {
		t.Skip("lzip not installed")
	}
	data := sample()
	a := runTool(t, bin, []string{"-c", "-0"}, data[:1000])
	b := runTool(t, bin, []string{"-c", "-6"}, data)
	multi := append(bytes.Clone(a), b...)
	if got := decompress(t, "lzip", multi); !bytes.Equal(got, append(bytes.Clone(data[:1000]), data...)) {
		t.Errorf("multi-member: got %d bytes", len(got))
	}
	// Members split with -b (member size) also come out as one stream.
	split := runTool(t, bin, []string{"-c", "-b", "100KiB"}, data)
	if got := decompress(t, "lzip", split); !bytes.Equal(got, data) {
		t.Errorf("split members: got %d bytes", len(got))
	}

	bad := []struct {
		name string
		in   []byte
	}{
		{"truncated", a[:len(a)-5]},
		{"bad crc", flip(a, len(a)-20)},
		{"bad size", flip(a, len(a)-10)},
		{"bad magic", flip(a, 0)},
		{"garbage after member", append(bytes.Clone(a), "LZIX\x01\x0c"...)},
	}
	for _, tc := range bad {
		r, _ := NewReader(bytes.NewReader(tc.in), "lzip")
		if _, err := io.ReadAll(r); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0xff
	return c
}

// TestCacheXZ decompresses the NARs of a real Nix binary cache and checks
// them against their narinfo (FileHash/FileSize of the .xz, NarHash/NarSize
// of the contents).
func TestCacheXZ(t *testing.T) {
	infos, _ := filepath.Glob("testdata/cache-xz/*.narinfo")
	if len(infos) == 0 {
		t.Fatal("no narinfo vectors")
	}
	for _, p := range infos {
		fields := readNarinfo(t, p)
		t.Run(filepath.Base(p), func(t *testing.T) {
			if fields["Compression"] != "xz" || !strings.HasSuffix(fields["URL"], ".nar"+Suffix("xz")) {
				t.Fatalf("unexpected Compression/URL %q %q", fields["Compression"], fields["URL"])
			}
			raw, err := os.ReadFile(filepath.Join("testdata/cache-xz", fields["URL"]))
			if err != nil {
				t.Fatal(err)
			}
			fh := sha256.Sum256(raw)
			if got := nixhash.NewSHA256(fh).String(); got != fields["FileHash"] {
				t.Errorf("FileHash %s, narinfo %s", got, fields["FileHash"])
			}
			r, err := NewReader(bytes.NewReader(raw), "xz")
			if err != nil {
				t.Fatal(err)
			}
			h, n, err := nar.Validate(r)
			if err != nil {
				t.Fatal(err)
			}
			if h.String() != fields["NarHash"] || fields["NarSize"] != itoa(n) {
				t.Errorf("NarHash %s %d, narinfo %s %s", h, n, fields["NarHash"], fields["NarSize"])
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func readNarinfo(t *testing.T, p string) map[string]string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if ok {
			m[k] = v
		}
	}
	return m
}

func TestZstdRejectsHugeWindow(t *testing.T) {
	// A frame header declaring a 2 GiB window (Window_Descriptor 0xa8) must
	// be refused rather than allocated.
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xa8, 0x01, 0x00, 0x00}
	r, err := NewReader(bytes.NewReader(frame), "zstd")
	if err != nil {
		return
	}
	if _, err := io.ReadAll(r); err == nil {
		t.Fatal("huge-window frame accepted")
	}
}
