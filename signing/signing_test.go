package signing

import (
	"bytes"
	"encoding/base64"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNixKeysFromNix(t *testing.T) {
	secText, pubText := string(read(t, "secret.key")), string(read(t, "public.key"))
	sec, err := ParseNixSecretKey(secText)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParseNixPublicKey(pubText + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if sec.String() != secText || pub.String() != pubText || sec.Public().String() != pubText {
		t.Fatalf("round trip: %q %q %q", sec.String(), pub.String(), sec.Public().String())
	}
	// Signature written by real Nix for c1vkj2…-multi (docs/formats.md §6).
	fp := []byte("1;/nix/store/c1vkj2mccblk74zz1fzah0m1rjmc47nw-multi;sha256:1hpblh9r4dkacy70sd0bs64s8k4318m8rkwk6k2zmba9snh25z7y;168;/nix/store/ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx-simple")
	sig := "research-cache-1:PkVfk91IOzcc7FwYECKhGDW9rRGEA/M0Z+3F344bt73fpQAW2I5Tg47IHvRGwiW4T0hzv6yZXwBh4DGN08hNAQ=="
	keys := []NixPublicKey{pub}
	if !VerifyNix(sig, fp, keys) {
		t.Fatal("real Nix signature does not verify")
	}
	if sec.Sign(fp) != sig { // Ed25519 is deterministic
		t.Fatalf("our signature %q differs from Nix's", sec.Sign(fp))
	}
	bad := append([]byte(nil), fp...)
	bad[len(bad)-1] ^= 1
	if VerifyNix(sig, bad, keys) {
		t.Fatal("flipped message verified")
	}
	if VerifyNix("other-name"+sig[len("research-cache-1"):], fp, keys) {
		t.Fatal("signature under unknown name verified")
	}
	other, _ := GenerateNixKey("research-cache-1")
	if VerifyNix(sig, fp, []NixPublicKey{other.Public()}) {
		t.Fatal("verified with the wrong key of the same name")
	}
}

func TestNixKeyErrors(t *testing.T) {
	for _, s := range []string{"", "nocolon", ":AAAA", "n:!!!", "n:AAAA", "n a:" + strings.Repeat("A", 44)} {
		if _, err := ParseNixPublicKey(s); err == nil {
			t.Errorf("ParseNixPublicKey(%q) succeeded", s)
		}
	}
	// A secret key whose public half was tampered with.
	sec := string(read(t, "secret.key"))
	raw, _ := base64.StdEncoding.DecodeString(sec[strings.IndexByte(sec, ':')+1:])
	raw[40] ^= 1
	if _, err := ParseNixSecretKey("x:" + base64.StdEncoding.EncodeToString(raw)); err == nil {
		t.Error("inconsistent secret key accepted")
	}
	if _, err := ParseNixSecretKey("garbage-secret"); err == nil || strings.Contains(err.Error(), "garbage-secret") {
		t.Errorf("secret key error leaks input or is nil: %v", err)
	}
	if _, err := GenerateNixKey("a:b"); err == nil {
		t.Error("name with colon accepted")
	}
}

func TestNixGenerateSignVerify(t *testing.T) {
	k, err := GenerateNixKey("gbc-test-1")
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseNixSecretKey(k.String())
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseNixPublicKey(k.Public().String())
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("hello")
	if !VerifyNix(k2.Sign(msg), msg, []NixPublicKey{p}) {
		t.Fatal("own signature does not verify")
	}
}

// The files libgcrypt printed must come back byte for byte from our printer.
func TestSexpRoundTripLibgcrypt(t *testing.T) {
	for _, name := range []string{"signing-key.pub", "signing-key.sec", "acl", "example-signature.sexp", "berlin.guix.gnu.org.pub"} {
		b := read(t, name)
		s, err := ParseSexp(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := s.Advanced(); !bytes.Equal(got, b) {
			t.Errorf("%s: printed\n%q\nwant\n%q", name, got, b)
		}
		s2, err := ParseSexp(s.Canonical())
		if err != nil || !s2.Equal(s) {
			t.Errorf("%s: canonical round trip: %v", name, err)
		}
	}
}

func TestSexpEncodings(t *testing.T) {
	// Expected outputs come from libgcrypt 1.10's gcry_sexp_sprint (advanced).
	cases := []struct{ in, want string }{
		{`(a b c)`, "(a b c)\n"},
		{`(a (b) c)`, "(a \n (b)\n c)\n"},
		{`(a (b c) (d (e f) g) h)`, "(a \n (b c)\n (d \n  (e f)\n  g)\n h)\n"},
		{`((a) b)`, "(\n (a)\n b)\n"},
		{`(a "hello world" "x\ny" #00ff# |AQID|)`, "(a \"hello world\" \"x\\ny\" #00FF# #010203#)\n"},
		{`(a ())`, "(a \n ()\n )\n"},
		{`(a "" b)`, "(a \"\" b)\n"},
		{`(a 3:abc 1:x)`, "(a abc x)\n"},
		{`(a "123" "1a" -x a.b x/y:z*+=)`, "(a \"123\" \"1a\" -x a.b x/y:z*+=)\n"},
		{`(a "\x01abc" "a\"b" "a\\b" "\t" "\x7f")`, "(a #01616263# \"a\\\"b\" \"a\\\\b\" \"\\t\" #7F#)\n"},
	}
	for _, c := range cases {
		s, err := ParseSexp([]byte(c.in))
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if got := string(s.Advanced()); got != c.want {
			t.Errorf("%s: got %q want %q", c.in, got, c.want)
		}
	}
}

func TestSexpRejects(t *testing.T) {
	deep := strings.Repeat("(", MaxSexpDepth+1) + strings.Repeat(")", MaxSexpDepth+1)
	for _, in := range []string{"", "a", "(a", "(a))", "(a #0#)", "(a #12", "(a \"x)", "(a 5:ab)", "(a [hint] b)", "(a 3x)", "(a |!!|)", deep, "(a \"\\q\")"} {
		if _, err := ParseSexp([]byte(in)); err == nil {
			t.Errorf("ParseSexp(%q) succeeded", in)
		}
	}
}

func guixBodyAndSig(t *testing.T, narinfo []byte) ([]byte, []byte) {
	t.Helper()
	i := bytes.Index(narinfo, []byte("Signature:"))
	line := narinfo[i:]
	line = line[:bytes.IndexByte(line, '\n')]
	parts := strings.Split(string(line[len("Signature: "):]), ";")
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	return narinfo[:i], raw
}

func TestGuixRealNarinfos(t *testing.T) {
	berlin, err := ParseGuixPublicKey(read(t, "berlin.guix.gnu.org.pub"))
	if err != nil {
		t.Fatal(err)
	}
	bordeaux, err := ParseGuixPublicKey(read(t, "bordeaux.guix.gnu.org.pub"))
	if err != nil {
		t.Fatal(err)
	}
	gcryptACL, err := ParseACL(read(t, "acl"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		file string
		acl  *ACL
	}{
		{"berlin-opensmtpd-test.narinfo", NewACL(berlin)},
		{"bordeaux-hello-2.12.2.narinfo", NewACL(bordeaux)},
		{"genenetwork-hello-2.12.1.narinfo", nil}, // embedded key, authorised below
		{"example-libgcrypt-signed.narinfo", gcryptACL},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			body, raw := guixBodyAndSig(t, read(t, c.file))
			sig, err := ParseGuixSignature(raw)
			if err != nil {
				t.Fatal(err)
			}
			if got := sig.Bytes(); !bytes.Equal(got, raw) {
				t.Errorf("signature re-printed differently:\n%q\n%q", got, raw)
			}
			acl := c.acl
			if acl == nil {
				acl = NewACL(sig.Key)
			}
			if err := VerifyGuix(body, sig, acl); err != nil {
				t.Fatal(err)
			}
			if err := VerifyGuix(body, sig, NewACL()); !errors.Is(err, ErrUnauthorizedKey) {
				t.Errorf("empty ACL: %v", err)
			}
			bad := append([]byte(nil), body...)
			bad[20] ^= 1
			if err := VerifyGuix(bad, sig, acl); !errors.Is(err, ErrCorruptSig) {
				t.Errorf("flipped body: %v", err)
			}
			// Flip a byte of the signed hash too, so only the ECDSA check stands.
			sig.Hash[5] ^= 1
			if err := VerifyGuix(bad, sig, acl); err == nil {
				t.Error("flipped hash verified")
			}
			sig.Hash[5] ^= 1
			sig2, _ := ParseGuixSignature(raw)
			sig2.R.Xor(sig2.R, bigOne())
			if sig2.VerifyMath() {
				t.Error("flipped r verified")
			}
		})
	}
}

// Guix signs with RFC 6979 nonces; with the same key and body our signature
// must equal the one libgcrypt produced.
func TestGuixSignMatchesLibgcrypt(t *testing.T) {
	sec, err := ParseGuixSecretKey(read(t, "signing-key.sec"))
	if err != nil {
		t.Fatal(err)
	}
	if got := sec.Bytes(); !bytes.Equal(got, read(t, "signing-key.sec")) {
		t.Errorf("secret key re-printed differently:\n%s", got)
	}
	if got := sec.Public().Bytes(); !bytes.Equal(got, read(t, "signing-key.pub")) {
		t.Errorf("public key differs:\n%s", got)
	}
	sig := sec.SignGuix(read(t, "example-unsigned-body.txt"))
	if got, want := sig.Bytes(), read(t, "example-signature.sexp"); !bytes.Equal(got, want) {
		t.Errorf("signature differs from libgcrypt's:\n%s\nwant\n%s", got, want)
	}
}

func TestGuixGenerateSignVerify(t *testing.T) {
	k, err := GenerateGuixKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseGuixSecretKey(k.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParseGuixPublicKey(k.Public().Bytes())
	if err != nil {
		t.Fatal(err)
	}
	acl, err := ParseACL(NewACL(pub).Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		data := []byte(strings.Repeat("x", i))
		sig := k2.SignGuix(data)
		sig2, err := ParseGuixSignature(sig.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyGuix(data, sig2, acl); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	// A d that does not match q is refused.
	bad := k
	other, _ := GenerateGuixKey()
	bad.Q = other.Q
	if _, err := ParseGuixSecretKey(bad.Bytes()); err == nil {
		t.Error("mismatched q/d accepted")
	}
}

func TestACLFile(t *testing.T) {
	b := read(t, "acl")
	acl, err := ParseACL(b)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := ParseGuixPublicKey(read(t, "signing-key.pub"))
	berlin, _ := ParseGuixPublicKey(read(t, "berlin.guix.gnu.org.pub"))
	if !acl.Authorized(pub) || acl.Authorized(berlin) {
		t.Fatal("authorisation wrong")
	}
	if got := NewACL(pub).Bytes(); !bytes.Equal(got, b) {
		t.Errorf("NewACL printed\n%s\nwant\n%s", got, b)
	}
	acl.Add(pub)
	acl.Add(berlin)
	acl2, err := ParseACL(acl.Bytes())
	if err != nil || len(acl2.Entries) != 2 || !acl2.Authorized(berlin) {
		t.Fatalf("re-parse: %v %d", err, len(acl2.Entries))
	}
	// Non-Ed25519 entries are kept but authorise nothing.
	rsa := []byte("(acl (entry (public-key (rsa (n #00AB#) (e #010001#))) (tag (guix import))))")
	acl3, err := ParseACL(rsa)
	if err != nil || len(acl3.Entries) != 1 || acl3.Entries[0].Key != nil {
		t.Fatalf("rsa entry: %v", err)
	}
}

// Independent checks: the research Python implementation and, when the
// system has it, libgcrypt's own gcry_pk_verify, must accept our signatures.
func TestGuixSignatureIndependentCheck(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not available")
	}
	k, err := GenerateGuixKey()
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("StorePath: /gnu/store/g7243n18qmhbbwbm2z7ch4ij9c43kiyf-research-dir\nNarHash: sha256:0wdnfr5yyshdavq5cx237cy2gzp3x5rc525xfgxqp406hyg8jqvz\nNarSize: 1624\nReferences: \n")
	sig := k.SignGuix(body)
	narinfo := append(append([]byte(nil), body...), "Signature: 1;gbc-test;"+base64.StdEncoding.EncodeToString(sig.Bytes())+"\n"...)
	dir := t.TempDir()
	f := filepath.Join(dir, "x.narinfo")
	if err := os.WriteFile(f, narinfo, 0o644); err != nil {
		t.Fatal(err)
	}
	tools, _ := filepath.Abs("testdata")
	out, err := exec.Command(py, filepath.Join(tools, "guix_ecdsa_ed25519.py"), f).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "body-sha256-matches=True ecdsa-ed25519-valid=True") {
		t.Fatalf("python verifier: %v\n%s", err, out)
	}
	script := "import sys; sys.path.insert(0, sys.argv[1])\ntry:\n import guix_sign_libgcrypt as g\nexcept Exception as e:\n print('NOLIB', e); sys.exit(0)\nprint(g.verify_narinfo(sys.argv[2]))"
	out, err = exec.Command(py, "-c", script, tools, f).CombinedOutput()
	if err != nil {
		t.Fatalf("libgcrypt check: %v\n%s", err, out)
	}
	switch s := string(out); {
	case strings.Contains(s, "NOLIB"):
		t.Logf("libgcrypt not available: %s", s)
	case !strings.Contains(s, "(True, True)"):
		t.Fatalf("libgcrypt rejects our signature: %s", s)
	}
}

func bigOne() *big.Int { return big.NewInt(1) }
