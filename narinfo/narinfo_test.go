package narinfo

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

func nixKeys(t *testing.T) []signing.NixPublicKey {
	k, err := signing.ParseNixPublicKey(string(read(t, "public.key")))
	if err != nil {
		t.Fatal(err)
	}
	return []signing.NixPublicKey{k}
}

func TestNixVectors(t *testing.T) {
	files, _ := filepath.Glob("testdata/*-*.narinfo")
	keys := nixKeys(t)
	other, _ := signing.GenerateNixKey("research-cache-1")
	n := 0
	for _, f := range files {
		base := filepath.Base(f)
		if !strings.HasPrefix(base, "xz-") && !strings.HasPrefix(base, "none-") {
			continue
		}
		n++
		t.Run(base, func(t *testing.T) {
			raw := read(t, base)
			ni, err := Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if ni.Flavour != Nix || len(ni.Sigs) != 1 {
				t.Fatalf("flavour %v sigs %d", ni.Flavour, len(ni.Sigs))
			}
			if got := ni.Bytes(); !bytes.Equal(got, raw) {
				t.Errorf("Bytes():\n%s\nwant\n%s", got, raw)
			}
			if err := ni.VerifyNix(keys); err != nil {
				t.Fatal(err)
			}
			if err := ni.VerifyNix([]signing.NixPublicKey{other.Public()}); !errors.Is(err, ErrNoValidSignature) {
				t.Errorf("other key: %v", err)
			}
			ni.NarSize++
			if err := ni.VerifyNix(keys); err == nil {
				t.Error("changed NarSize still verifies")
			}
		})
	}
	if n != 5 {
		t.Fatalf("tested %d Nix narinfos, want 5", n)
	}
}

func TestFingerprint(t *testing.T) {
	ni, err := Parse(read(t, "xz-c1vkj2mccblk74zz1fzah0m1rjmc47nw.narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	fp, _ := ni.Fingerprint()
	want := "1;/nix/store/c1vkj2mccblk74zz1fzah0m1rjmc47nw-multi;sha256:1hpblh9r4dkacy70sd0bs64s8k4318m8rkwk6k2zmba9snh25z7y;168;/nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple"
	if string(fp) != want {
		t.Fatalf("fingerprint %q", fp)
	}
	ni.References = nil
	fp, _ = ni.Fingerprint()
	if !strings.HasSuffix(string(fp), ";168;") {
		t.Fatalf("empty refs: %q", fp)
	}
}

func TestSignNixRoundTrip(t *testing.T) {
	k, _ := signing.GenerateNixKey("gbc-1")
	ni, _ := Parse(read(t, "none-c1vkj2mccblk74zz1fzah0m1rjmc47nw.narinfo"))
	if err := ni.SignNix(k); err != nil {
		t.Fatal(err)
	}
	if err := ni.SignNix(k); err != nil { // re-signing replaces, not duplicates
		t.Fatal(err)
	}
	back, err := Parse(ni.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Sigs) != 2 {
		t.Fatalf("sigs %v", back.Sigs)
	}
	if err := back.VerifyNix([]signing.NixPublicKey{k.Public()}); err != nil {
		t.Fatal(err)
	}
	if err := back.VerifyNix(nixKeys(t)); err != nil {
		t.Fatal(err)
	}
}

func guixACL(t *testing.T, names ...string) *signing.ACL {
	acl := signing.NewACL()
	for _, n := range names {
		k, err := signing.ParseGuixPublicKey(read(t, n))
		if err != nil {
			t.Fatal(err)
		}
		acl.Add(k)
	}
	return acl
}

func TestGuixVectors(t *testing.T) {
	gcrypt, err := signing.ParseACL(read(t, "libgcrypt.acl"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		file  string
		acl   *signing.ACL
		nars  int
		refs  int
		sys   string
		first Nar
	}{
		{"berlin-opensmtpd-test.narinfo", guixACL(t, "berlin.guix.gnu.org.pub"), 1, 1, "x86_64-linux", Nar{"nar/gzip/y857mykfnc9vd1sc2lqz5g35l111fp71-opensmtpd-test", "gzip", 894}},
		{"bordeaux-hello-2.12.2.narinfo", guixACL(t, "bordeaux.guix.gnu.org.pub"), 2, 3, "x86_64-linux", Nar{"nar/lzip/cs56i9digj9qg1bd383cmxc6xrfpdn9n-hello-2.12.2", "lzip", 68076}},
		{"genenetwork-hello-2.12.1.narinfo", nil, 2, 3, "", Nar{"nar/gzip/8bjy9g0cssjrw9ljz2r8ww1sma95isfj-hello-2.12.1", "gzip", 73331}},
		{"example-libgcrypt-signed.narinfo", gcrypt, 2, 0, "", Nar{"nar/g7243n18qmhbbwbm2z7ch4ij9c43kiyf-research-dir", "none", 1624}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			raw := read(t, c.file)
			ni, err := Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if ni.Flavour != Guix || len(ni.Nars) != c.nars || len(ni.References) != c.refs || ni.System != c.sys || ni.Nars[0] != c.first {
				t.Fatalf("parsed %+v", ni)
			}
			if got := ni.Bytes(); !bytes.Equal(got, raw) {
				t.Errorf("Bytes():\n%s\nwant\n%s", got, raw)
			}
			acl := c.acl
			if acl == nil {
				sig, err := ni.GuixSignature()
				if err != nil {
					t.Fatal(err)
				}
				acl = signing.NewACL(sig.Key)
			}
			if err := VerifyGuix(raw, acl); err != nil {
				t.Fatal(err)
			}
			if err := VerifyGuix(raw, guixACL(t)); !errors.Is(err, signing.ErrUnauthorizedKey) {
				t.Errorf("empty acl: %v", err)
			}
			// Every single flipped byte in the signed part must be caught
			// (or make the file unparseable).
			sigAt := bytes.Index(raw, []byte("Signature:"))
			for i := 0; i < sigAt; i += 7 {
				bad := append([]byte(nil), raw...)
				bad[i] ^= 0x01
				if err := VerifyGuix(bad, acl); err == nil {
					t.Fatalf("flipped byte %d still verifies", i)
				}
			}
			// Lines after the signature are not signed (Guix's design).
			if ni.Nars[len(ni.Nars)-1].URL != "" && !bytes.Contains(ni.SignedBody, []byte("URL:")) {
				ni.Nars = ni.Nars[:1]
				if err := VerifyGuix(ni.Bytes(), acl); err != nil {
					t.Errorf("dropping an unsigned NAR group: %v", err)
				}
			}
		})
	}
}

// With libgcrypt's RFC 6979 nonces, signing the same fields with the same
// key and host must reproduce the libgcrypt-signed example byte for byte.
func TestSignGuixReproducesLibgcrypt(t *testing.T) {
	want := read(t, "example-libgcrypt-signed.narinfo")
	parsed, err := Parse(want)
	if err != nil {
		t.Fatal(err)
	}
	key, err := signing.ParseGuixSecretKey(read(t, "libgcrypt-signing-key.sec"))
	if err != nil {
		t.Fatal(err)
	}
	ni := &NarInfo{
		StorePath: parsed.StorePath, NarHash: parsed.NarHash, NarSize: parsed.NarSize,
		Nars: parsed.Nars,
	}
	if err := ni.SignGuix(key, "research-host"); err != nil {
		t.Fatal(err)
	}
	if got := ni.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("SignGuix:\n%s\nwant\n%s", got, want)
	}
	acl, _ := signing.ParseACL(read(t, "libgcrypt.acl"))
	if err := ni.VerifyGuix(acl); err != nil {
		t.Fatal(err)
	}
}

func TestParseErrors(t *testing.T) {
	good := string(read(t, "xz-c1vkj2mccblk74zz1fzah0m1rjmc47nw.narinfo"))
	bordeaux := string(read(t, "bordeaux-hello-2.12.2.narinfo"))
	bordeauxSig := bordeaux[strings.Index(bordeaux, "Signature:"):]
	bordeauxSig = bordeauxSig[:strings.IndexByte(bordeauxSig, '\n')+1]
	cases := []struct {
		name, in string
		line     int
		field    string
	}{
		{"no colon", "StorePath /nix/store/x\n", 1, ""},
		{"no space", "StorePath:/nix\n", 1, "StorePath"},
		{"bad path", "StorePath: nix/store/x\n", 1, "StorePath"},
		{"bad hash char", strings.Replace(good, "c1vkj2mccblk74zz1fzah0m1rjmc47nw-multi\n", "e1vkj2mccblk74zz1fzah0m1rjmc47nw-multi\n", 1), 1, "StorePath"},
		{"bad nar size", strings.Replace(good, "NarSize: 168", "NarSize: -1", 1), 7, "NarSize"},
		{"bad nar hash", strings.Replace(good, "NarHash: sha256:1h", "NarHash: sha256:eh", 1), 6, "NarHash"},
		{"bad ref", strings.Replace(good, "References: ahms", "References: AHMS", 1), 8, "References"},
		{"repeated", good + "NarSize: 1\n", 11, "NarSize"},
		{"missing narhash", "StorePath: /nix/store/c1vkj2mccblk74zz1fzah0m1rjmc47nw-multi\nURL: x\nNarSize: 1\n", 4, "NarHash"},
		{"missing url", strings.Replace(good, "URL: nar/0isjcca36cwd2ycl3m6an21riwp8mgfw1jh4f1fxv916ysacx473.nar.xz\n", "", 1), 10, "URL"},
		{"bad guix sig", good + "Signature: 2;h;AAAA\n", 11, "Signature"},
		{"guix sig b64", good + "Signature: 1;h;!!!\n", 11, "Signature"},
		{"sig text early", good + "X: Signature:\n" + bordeauxSig, 13, "Signature"},
		{"long line", "X: " + strings.Repeat("a", MaxLineLen) + "\n", 1, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.in))
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not *Error", err)
			}
			if pe.Line != c.line || pe.Field != c.field {
				t.Fatalf("got line %d field %q (%v), want %d %q", pe.Line, pe.Field, err, c.line, c.field)
			}
		})
	}
	if _, err := Parse(make([]byte, MaxSize+1)); err == nil {
		t.Fatal("oversized input accepted")
	}
}

func FuzzParse(f *testing.F) {
	// Seeds live in testdata/fuzz/FuzzParse (copies of the vectors).
	f.Fuzz(func(t *testing.T, b []byte) {
		ni, err := Parse(b)
		if err != nil {
			return
		}
		out := ni.Bytes()
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of\n%q\nfailed: %v", out, err)
		}
		if back.StorePath != ni.StorePath || !back.NarHash.Equal(ni.NarHash) || back.NarSize != ni.NarSize ||
			strings.Join(back.References, " ") != strings.Join(ni.References, " ") || back.Flavour != ni.Flavour {
			t.Fatalf("round trip changed fields:\n%+v\n%+v", ni, back)
		}
		if ni.Flavour == Guix && ni.Signature != "" && !bytes.Equal(back.SignedBody, ni.SignedBody) {
			t.Fatalf("signed body changed")
		}
		if ni.Flavour == Nix {
			fp1, err1 := ni.Fingerprint()
			fp2, err2 := back.Fingerprint()
			if (err1 == nil) != (err2 == nil) || !bytes.Equal(fp1, fp2) {
				t.Fatalf("fingerprint changed: %q %q", fp1, fp2)
			}
		}
	})
}
