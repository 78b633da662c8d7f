package storepath

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/nixhash"
)

// Each vector .drv's file name is its own text path: sha256 of the exact
// bytes with references inputSrcs ∪ inputDrvs (listed by hand here so this
// package's tests do not depend on the derivation parser).
func TestMakeTextPathDrvVectors(t *testing.T) {
	const nix, gnu = "/nix/store", "/gnu/store"
	tests := []struct {
		file, storeDir, want string
		refs                 []string
	}{
		{"8mw0g9pf9bk0iaxmykh5in4x672fpqv0-multi.drv", nix, "", []string{
			"/nix/store/fddm4k6zgckh82rck3n31awvwvh86p98-simple.drv", // unsorted on purpose
			"/nix/store/dzz8i63ljh2cdafy8vgqh0mp92nsq45j-escapes.drv",
		}},
		{"czia972qp0vp2385vx5jk7y24jpdlpg1-wire-fail.drv", nix, "", nil},
		{"dapid0hrb2jhxglycwd3pnyn822hk4ri-structured.drv", nix, "", nil},
		{"dzz8i63ljh2cdafy8vgqh0mp92nsq45j-escapes.drv", nix, "", nil},
		{"fddm4k6zgckh82rck3n31awvwvh86p98-simple.drv", nix, "", []string{"/nix/store/5nw3di7akby6ah73vh1qa8ig75zm49h5-builder.sh"}},
		{"fl0vfqaxxp70ns8ylxagksmk7k33jbf1-fod-flat.txt.drv", nix, "", nil},
		{"i62jjqn5hz0k8r79dwj7vag37yx3b5rh-uses-fod.drv", nix, "", []string{
			"/nix/store/fl0vfqaxxp70ns8ylxagksmk7k33jbf1-fod-flat.txt.drv",
			"/nix/store/q78zwwpr40n8a1j2zr34wlx5bpsradfv-fod-rec.drv",
		}},
		{"ky71rdgk0qfqi1bqls53cv8jplj97i2i-ctrl.drv", nix, "", nil},
		{"q78zwwpr40n8a1j2zr34wlx5bpsradfv-fod-rec.drv", nix, "", nil},
		{"yqkm3hkny037xyd605127rg5p4ml6zil-wire-bp.drv", nix, "", nil},
		{"zsl6jf6iv6jvmb1dmr470xmahp7p8298-wire-bd.drv", nix, "", nil},
		{"jza6pndi0xdj4miyiq03r1b85clhdc5g-hello-gnu.drv", gnu, "", []string{"/gnu/store/jsm6g4dvrnwhy98w27qxy17p1kqrzhr6-src.txt"}},
		// The daemon accepted this one at the path we predict (session4 transcript).
		{"py-made.drv-contents", nix, "/nix/store/asw8rxqpn4y1iya11wwxnq2m112dvivf-py-made.drv", nil},
		// Real Guix drv; path as computed by the independent Python tool.
		{"guix-minimal.drv-contents", gnu, "/gnu/store/w9krgvil6919s2ghqgx443zb9krx75s6-minimal.drv", nil},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want == "" {
				want = tc.storeDir + "/" + tc.file
			}
			sp, err := Parse(want)
			if err != nil {
				t.Fatal(err)
			}
			if got := MakeTextPath(tc.storeDir, sp.Name, b, tc.refs); got != want {
				t.Fatalf("MakeTextPath = %s, want %s", got, want)
			}
		})
	}
}

func TestMakeTextPathSources(t *testing.T) {
	// builtins.toFile sources referenced by the vectors.
	if got, want := MakeTextPath("/nix/store", "builder.sh", []byte("echo hello > $out\n"), nil),
		"/nix/store/5nw3di7akby6ah73vh1qa8ig75zm49h5-builder.sh"; got != want {
		t.Errorf("builder.sh: got %s, want %s", got, want)
	}
	if got, want := MakeTextPath("/gnu/store", "src.txt", []byte("some source\n"), nil),
		"/gnu/store/jsm6g4dvrnwhy98w27qxy17p1kqrzhr6-src.txt"; got != want {
		t.Errorf("src.txt: got %s, want %s", got, want)
	}
}

func TestMakeFixedOutputPath(t *testing.T) {
	hello := mustHash(t, "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
	helloNar := mustHash(t, "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw")
	tests := []struct {
		name, drvName string
		recursive     bool
		h             nixhash.Hash
		want          string
	}{
		{"flat sha256", "fod-flat.txt", false, hello, "/nix/store/z14qj669mh19b3xwlhzri8hrprd2dz09-fod-flat.txt"},
		{"recursive sha256 is a source path", "fod-rec", true, helloNar, "/nix/store/9x8bwh0mba9ynl5l7840jn3zzs6z6qrb-fod-rec"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := MakeFixedOutputPath("/nix/store", tc.drvName, tc.recursive, tc.h, nil); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
	// Recursive non-sha256 must not take the "source" shortcut: the result
	// differs from a source path of the same digest.
	sha1 := nixhash.Hash{Algo: nixhash.SHA1, Digest: make([]byte, 20)}
	a := MakeFixedOutputPath("/nix/store", "x", true, sha1, nil)
	b := Make("/nix/store", "source", sha1.Digest, "x")
	if a == b {
		t.Fatalf("recursive sha1 produced a source path %s", a)
	}
}

func mustHash(t *testing.T, s string) nixhash.Hash {
	t.Helper()
	h, err := nixhash.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestParse(t *testing.T) {
	good := []struct{ in, dir, hash, name string }{
		{"/nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple", "/nix/store", "ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx", "simple"},
		{"/gnu/store/280xcws0xz6c1gx6721jyj2d8j0ly9gz-minimal", "/gnu/store", "280xcws0xz6c1gx6721jyj2d8j0ly9gz", "minimal"},
		{"/s/00000000000000000000000000000000-a+-._?=Z9", "/s", "00000000000000000000000000000000", "a+-._?=Z9"},
		{"/nix/store/00000000000000000000000000000000-" + strings.Repeat("x", 211), "/nix/store", "00000000000000000000000000000000", strings.Repeat("x", 211)},
	}
	for _, tc := range good {
		p, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if p.StoreDir != tc.dir || p.HashPart != tc.hash || p.Name != tc.name {
			t.Errorf("Parse(%q) = %+v", tc.in, p)
		}
		if p.String() != tc.in || p.Base() != tc.hash+"-"+tc.name {
			t.Errorf("String/Base of %q: %q %q", tc.in, p.String(), p.Base())
		}
	}
	bad := []struct{ in, why string }{
		{"", "not absolute"},
		{"ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple", "not absolute"},
		{"/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple", "not absolute"},
		{"//ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple", "root directory"},
		{"/nix/store/", "too short"},
		{"/nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx", "too short"},
		{"/nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-", "too short"},
		{"/nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfe-simple", "invalid character 'e'"},
		{"/nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx_simple", "expected '-'"},
		{"/nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-.hidden", "starts with a period"},
		{"/nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-a b", "invalid character ' '"},
		{"/nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-é", "invalid character"},
		{"/nix/store/00000000000000000000000000000000-" + strings.Repeat("x", 212), "limit 211"},
		{"/nix/../store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple", "not a clean path"},
		{"/nix/store//ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple", "not a clean path"},
		{"nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple", "not absolute"},
	}
	for _, tc := range bad {
		_, err := Parse(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("Parse(%q) error = %v, want it to mention %q", tc.in, err, tc.why)
		}
	}
}

func TestOutputPathName(t *testing.T) {
	if OutputPathName("multi", "out") != "multi" || OutputPathName("multi", "dev") != "multi-dev" {
		t.Fatal("OutputPathName")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("/nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple")
	f.Add("/gnu/store/280xcws0xz6c1gx6721jyj2d8j0ly9gz-minimal")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		if p.String() != s {
			t.Fatalf("String() = %q, input %q", p.String(), s)
		}
	})
}

func TestIsBase32MatchesAlphabet(t *testing.T) {
	for c := 0; c < 256; c++ {
		if isBase32(byte(c)) != strings.ContainsRune(nixhash.Alphabet, rune(c)) {
			t.Errorf("isBase32(%q) disagrees with nixhash.Alphabet", byte(c))
		}
	}
}
