package archive

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/signing"
)

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type rec struct {
	nar     []byte
	path    string
	refs    []string
	deriver string
	sig     *string
	r       *Record
}

func readAll(t testing.TB, b []byte) ([]rec, error) {
	r := NewReader(bytes.NewReader(b))
	var out []rec
	for {
		x, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		data, err := io.ReadAll(x.NAR)
		if err != nil {
			return out, err
		}
		out = append(out, rec{data, x.Path, x.References, x.Deriver, x.Signature, x})
	}
}

func writeAll(t testing.TB, recs []rec) []byte {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, r := range recs {
		if err := w.WriteRecord(bytes.NewReader(r.nar), r.path, r.refs, r.deriver, r.sig); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestVectors(t *testing.T) {
	// NarHash/NarSize of the two paths as published in vectors/cache-none.
	known := map[string]struct {
		hash string
		size int64
	}{
		"/nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple": {"sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw", 120},
		"/nix/store/c1vkj2mccblk74zz1fzah0m1rjmc47nw-multi":  {"sha256:1hpblh9r4dkacy70sd0bs64s8k4318m8rkwk6k2zmba9snh25z7y", 168},
	}
	cases := []struct {
		file  string
		n     int
		first string
		sig   bool
	}{
		{"multi-closure.export", 2, "/nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple", false},
		{"builder.sh.export", 1, "/nix/store/5nw3di7akby6ah73vh1qa8ig75zm49h5-builder.sh", false},
		{"handmade-with-legacy-sig.export", 1, "/nix/store/gkkxnayyqhnvaydnm34rrksqwgs2a3k7-handmade-exec", true},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			raw := read(t, c.file)
			recs, err := readAll(t, raw)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != c.n || recs[0].path != c.first || (recs[0].sig != nil) != c.sig {
				t.Fatalf("got %d records, first %q sig %v", len(recs), recs[0].path, recs[0].sig)
			}
			for _, r := range recs {
				h, size, err := nar.Validate(bytes.NewReader(r.nar))
				if err != nil {
					t.Fatalf("%s: NAR does not validate: %v", r.path, err)
				}
				if !h.Equal(r.r.NarHash) || size != r.r.NarSize {
					t.Fatalf("%s: hash/size %v %d vs %v %d", r.path, h, size, r.r.NarHash, r.r.NarSize)
				}
				if k, ok := known[r.path]; ok && (h.String() != k.hash || size != k.size) {
					t.Errorf("%s: NarHash %s size %d, narinfo says %s %d", r.path, h, size, k.hash, k.size)
				}
			}
			if c.file == "multi-closure.export" {
				if got := recs[1].refs; len(got) != 1 || got[0] != recs[0].path {
					t.Errorf("multi references %v", got)
				}
				if !strings.HasSuffix(recs[1].deriver, "-multi.drv") {
					t.Errorf("deriver %q", recs[1].deriver)
				}
			}
			if c.file == "builder.sh.export" && recs[0].deriver != "" {
				t.Errorf("deriver %q, want none", recs[0].deriver)
			}
			if got := writeAll(t, recs); !bytes.Equal(got, raw) {
				t.Fatalf("rewritten stream differs (%d vs %d bytes)", len(got), len(raw))
			}
		})
	}
}

// Skipping a record without reading its NAR must still find the next one.
func TestNextSkipsUnreadNAR(t *testing.T) {
	r := NewReader(bytes.NewReader(read(t, "multi-closure.export")))
	var paths []string
	for {
		x, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := x.Finish(); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, x.Path)
	}
	if len(paths) != 2 {
		t.Fatalf("paths %v", paths)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("after end: %v", err)
	}
}

func TestTruncatedAndCorrupt(t *testing.T) {
	raw := read(t, "multi-closure.export")
	for i := 0; i < len(raw); i++ {
		if _, err := readAll(t, raw[:i]); err == nil {
			t.Fatalf("truncation at %d accepted", i)
		}
	}
	// Corrupting any single byte must either fail or change nothing the
	// reader reports as valid framing; it must never panic or hang.
	for i := 0; i < len(raw); i++ {
		bad := append([]byte(nil), raw...)
		bad[i] ^= 0xff
		readAll(t, bad)
	}
	bad := append([]byte(nil), raw...)
	bad[0] = 2
	if _, err := readAll(t, bad); err == nil || !strings.Contains(err.Error(), "record flag") {
		t.Fatalf("bad flag: %v", err)
	}
}

func TestWriterRejects(t *testing.T) {
	raw := read(t, "builder.sh.export")
	recs, _ := readAll(t, raw)
	w := NewWriter(io.Discard)
	if err := w.WriteRecord(bytes.NewReader(append(recs[0].nar, 0)), recs[0].path, nil, "", nil); err == nil {
		t.Error("trailing data after NAR accepted")
	}
	if err := w.WriteRecord(bytes.NewReader(recs[0].nar[:len(recs[0].nar)-8]), recs[0].path, nil, "", nil); err == nil {
		t.Error("truncated NAR accepted")
	}
	if err := w.WriteRecord(bytes.NewReader(recs[0].nar), "relative", nil, "", nil); err == nil {
		t.Error("relative path accepted")
	}
}

func TestGuixSignedRecords(t *testing.T) {
	key, err := signing.ParseGuixSecretKey(read(t, "guix-signing-key.sec"))
	if err != nil {
		t.Fatal(err)
	}
	acl, err := signing.ParseACL(read(t, "guix.acl"))
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := readAll(t, read(t, "multi-closure.export"))
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, r := range recs {
		if err := w.WriteGuixRecord(bytes.NewReader(r.nar), r.path, r.refs, r.deriver, key); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	signed := buf.Bytes()
	got, err := readAll(t, signed)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range got {
		if r.sig == nil || !strings.HasPrefix(*r.sig, "(signature \n (data \n") {
			t.Fatalf("signature %v", r.sig)
		}
		if err := r.r.VerifyGuix(acl); err != nil {
			t.Fatal(err)
		}
		if err := r.r.VerifyGuix(signing.NewACL()); !errors.Is(err, signing.ErrUnauthorizedKey) {
			t.Fatalf("empty ACL: %v", err)
		}
	}
	// Flip a byte of the first file's contents ("hello\n" lives in the NAR).
	i := bytes.Index(signed, []byte("contents"))
	bad := append([]byte(nil), signed...)
	bad[i+16] ^= 1
	got, err = readAll(t, bad)
	if err != nil {
		t.Fatal(err)
	}
	if err := got[0].r.VerifyGuix(acl); !errors.Is(err, signing.ErrCorruptSig) {
		t.Fatalf("tampered NAR: %v", err)
	}
}

// Round trip through real Nix: export a closure from one scratch store,
// read and rewrite it here, import it into another scratch store.
func TestRealNixExportImport(t *testing.T) {
	for _, tool := range []string{"nix-store", "nix-instantiate"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	tmp := t.TempDir()
	env := append(os.Environ(), "NIX_CONFIG=build-users-group =\nsubstituters =\nsandbox = false", "XDG_CACHE_HOME="+tmp+"/cache")
	nix := func(stdin []byte, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = env
		cmd.Stdin = bytes.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, stderr.String())
		}
		return out
	}
	storeA, storeB := "local?root="+tmp+"/a", "local?root="+tmp+"/b"
	expr := filepath.Join(tmp, "e.nix")
	os.WriteFile(expr, []byte(`let a = builtins.toFile "gbc-archive-a" "a\n"; b = builtins.toFile "gbc-archive-b" "b refers to ${a}\n"; in
derivation { name = "gbc-archive"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${b} > $out" ]; }`), 0o644)
	drv := strings.TrimSpace(string(nix(nil, "nix-instantiate", "--store", storeA, expr)))
	closure := strings.Fields(string(nix(nil, "nix-store", "--store", storeA, "-qR", drv)))
	if len(closure) != 3 {
		t.Fatalf("closure %v", closure)
	}
	exported := nix(nil, append([]string{"nix-store", "--store", storeA, "--export"}, closure...)...)
	recs, err := readAll(t, exported)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[2].path != drv {
		t.Fatalf("records %d, last %q", len(recs), recs[len(recs)-1].path)
	}
	rewritten := writeAll(t, recs)
	if !bytes.Equal(rewritten, exported) {
		t.Fatal("rewritten export differs from nix-store --export")
	}
	imported := strings.Fields(string(nix(rewritten, "nix-store", "--store", storeB, "--import")))
	if len(imported) != 3 {
		t.Fatalf("imported %v", imported)
	}
	for i, p := range closure {
		ha := nix(nil, "nix-store", "--store", storeA, "-q", "--hash", p)
		hb := nix(nil, "nix-store", "--store", storeB, "-q", "--hash", p)
		if !bytes.Equal(ha, hb) {
			t.Fatalf("%s: hash %s vs %s", p, ha, hb)
		}
		if i == 2 && recs[2].r.NarHash.String() != strings.TrimSpace(string(ha)) {
			t.Fatalf("our NarHash %s, nix says %s", recs[2].r.NarHash, ha)
		}
	}
}

func FuzzReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := readAll(t, b)
		if err != nil {
			return
		}
		// Whatever parses must be rewritable byte for byte, up to the end marker.
		out := writeAll(t, recs)
		if !bytes.HasPrefix(b, out) {
			t.Fatalf("rewrite differs")
		}
	})
}
