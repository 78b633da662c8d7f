package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/narinfo"
	"github.com/gbc-farm/gbc/signing"
)

func runCmd(t *testing.T, f func(context.Context, env, []string) error, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	e := env{stdin: strings.NewReader(""), stdout: &out, stderr: io.Discard, log: slog.New(slog.DiscardHandler)}
	err := f(context.Background(), e, args)
	return out.String(), err
}

func td(name string) string { return filepath.Join("testdata", "narinfo", name) }

func isUsage(err error) bool {
	var ue usageError
	return errors.As(err, &ue)
}

func TestNarinfoVerify(t *testing.T) {
	pub, err := os.ReadFile(td("public.key"))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := signing.GenerateNixKey("research-cache-1")
	nixFile := td("c1vkj2mccblk74zz1fzah0m1rjmc47nw.narinfo")
	cases := []struct {
		name string
		args []string
		ok   bool
	}{
		{"nix literal key", []string{"--key", string(pub), nixFile}, true},
		{"nix key file", []string{"--key", td("public.key"), nixFile}, true},
		{"nix wrong key", []string{"--key", other.Public().String(), nixFile}, false},
		{"nix with guix key only", []string{"--key", td("bordeaux.guix.gnu.org.pub"), nixFile}, false},
		{"nix with both", []string{"--key", td("bordeaux.guix.gnu.org.pub"), "--key", td("public.key"), nixFile}, true},
		{"guix key file", []string{"--key", td("bordeaux.guix.gnu.org.pub"), td("bordeaux-hello-2.12.2.narinfo")}, true},
		{"guix old layout", []string{"--key", td("berlin.guix.gnu.org.pub"), td("berlin-opensmtpd-test.narinfo")}, true},
		{"guix wrong key", []string{"--key", td("berlin.guix.gnu.org.pub"), td("bordeaux-hello-2.12.2.narinfo")}, false},
		{"guix acl", []string{"--key", td("libgcrypt.acl"), td("example-libgcrypt-signed.narinfo")}, true},
		{"guix with nix key only", []string{"--key", string(pub), td("example-libgcrypt-signed.narinfo")}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := runCmd(t, runNarinfo, append([]string{"verify"}, c.args...)...)
			if c.ok != (err == nil) {
				t.Fatalf("err = %v, out %q", err, out)
			}
			if err != nil && isUsage(err) {
				t.Fatalf("verification failure reported as usage error: %v", err)
			}
			if c.ok && !strings.HasPrefix(out, "ok: ") {
				t.Fatalf("out %q", out)
			}
		})
	}
}

func TestNarinfoUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"sign"},
		{"verify", "x.narinfo"},
		{"verify", "--key", "not-a-key", td("bordeaux-hello-2.12.2.narinfo")},
		{"verify", "--key", td("public.key")},
		{"verify", "--bogus"},
	} {
		if _, err := runCmd(t, runNarinfo, args...); !isUsage(err) {
			t.Errorf("%v: %v, want usage error", args, err)
		}
	}
	out, err := runCmd(t, runNarinfo, "verify", "--help")
	if err != nil || !strings.Contains(out, "--key PUBKEY") {
		t.Fatalf("--help: %v %q", err, out)
	}
	if _, err := runCmd(t, runNarinfo, "verify", "--key", td("public.key"), td("missing.narinfo")); err == nil || isUsage(err) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestKeyGenerateNix(t *testing.T) {
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "sec"), filepath.Join(dir, "pub")
	if _, err := runCmd(t, runKey, "generate", "--nix", "gbc-cli-1", "--secret", sec, "--public", pub); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(sec)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret mode: %v %v", st.Mode(), err)
	}
	secText, _ := os.ReadFile(sec)
	pubText, _ := os.ReadFile(pub)
	if bytes.HasSuffix(secText, []byte("\n")) || !bytes.HasPrefix(pubText, []byte("gbc-cli-1:")) {
		t.Fatalf("key file format: %q", pubText)
	}
	k, err := signing.ParseNixSecretKey(string(secText))
	if err != nil || k.Public().String() != string(pubText) {
		t.Fatalf("keys do not match: %v", err)
	}
	// Sign a narinfo with the new key and check it through the CLI.
	raw, _ := os.ReadFile(td("c1vkj2mccblk74zz1fzah0m1rjmc47nw.narinfo"))
	ni, _ := narinfo.Parse(raw)
	ni.Sigs = nil
	if err := ni.SignNix(k); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "x.narinfo")
	os.WriteFile(f, ni.Bytes(), 0o644)
	if out, err := runCmd(t, runNarinfo, "verify", "--key", pub, f); err != nil {
		t.Fatalf("verify: %v %q", err, out)
	}
	if _, err := runCmd(t, runNarinfo, "verify", "--key", td("public.key"), f); err == nil {
		t.Fatal("verified with the wrong key")
	}
	// Never overwrite.
	if _, err := runCmd(t, runKey, "generate", "--nix", "gbc-cli-2", "--secret", sec, "--public", filepath.Join(dir, "pub2")); err == nil {
		t.Fatal("overwrote secret key")
	}
	if _, err := os.Stat(filepath.Join(dir, "pub2")); err == nil {
		t.Fatal("wrote a public key without its secret")
	}
	if again, _ := os.ReadFile(sec); !bytes.Equal(again, secText) {
		t.Fatal("secret key changed")
	}
}

func TestKeyGenerateGuix(t *testing.T) {
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "signing-key.sec"), filepath.Join(dir, "signing-key.pub")
	if _, err := runCmd(t, runKey, "generate", "--guix", "--secret", sec, "--public", pub); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(sec); st.Mode().Perm() != 0o600 {
		t.Fatalf("secret mode %v", st.Mode())
	}
	secText, _ := os.ReadFile(sec)
	k, err := signing.ParseGuixSecretKey(secText)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(td("example-libgcrypt-signed.narinfo"))
	ni, _ := narinfo.Parse(raw)
	if err := ni.SignGuix(k, "gbc-test"); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "x.narinfo")
	os.WriteFile(f, ni.Bytes(), 0o644)
	if out, err := runCmd(t, runNarinfo, "verify", "--key", pub, f); err != nil || !strings.Contains(out, "host gbc-test") {
		t.Fatalf("verify: %v %q", err, out)
	}
	if _, err := runCmd(t, runNarinfo, "verify", "--key", td("libgcrypt.acl"), f); err == nil {
		t.Fatal("verified with an ACL lacking the key")
	}
}

func TestKeyUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{},
		{"show"},
		{"generate"},
		{"generate", "--guix", "--nix", "n", "--secret", dir + "/a", "--public", dir + "/b"},
		{"generate", "--nix", "n", "--secret", dir + "/a"},
		{"generate", "--nix", "bad:name", "--secret", dir + "/a", "--public", dir + "/b"},
		{"generate", "--guix", "--secret", dir + "/a", "--public", dir + "/a"},
	} {
		if _, err := runCmd(t, runKey, args...); !isUsage(err) {
			t.Errorf("%v: %v, want usage error", args, err)
		}
	}
	if out, err := runCmd(t, runKey, "generate", "--help"); err != nil || !strings.Contains(out, "--guix") {
		t.Fatalf("--help: %v %q", err, out)
	}
}
