package cache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
	"github.com/gbc-farm/gbc/storepath"
)

// publishClosure publishes out the way the coordinator will (an agent's
// compressed upload + Publish) and its dependency with PublishLocal.
func publishClosure(t *testing.T, c *Cache, drv, out string, closure []string) {
	t.Helper()
	env := nixEnv(t)
	ctx := context.Background()
	for _, p := range closure {
		wantRefs := strings.Fields(run(t, env, "nix-store", "-q", "--references", p))
		if p != out {
			e, err := c.PublishLocal(ctx, p, "", closure)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(e.References, wantRefs) {
				t.Fatalf("scanned references of %s: %v, nix says %v", p, e.References, wantRefs)
			}
			continue
		}
		file := filepath.Join(t.TempDir(), "upload.nar.zst")
		e := compressNar(t, p, "zstd", file)
		e.StorePath, e.References, e.Deriver = p, wantRefs, drv
		if err := c.Publish(ctx, e, file); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("Publish left the upload behind: %v", err)
		}
		// The reference scanner agrees with Nix's on a real output too.
		if got := scanRefs(t, p, closure); !slices.Equal(got, wantRefs) {
			t.Fatalf("scanned references of %s: %v, nix says %v", p, got, wantRefs)
		}
	}
}

func scanRefs(t *testing.T, p string, candidates []string) []string {
	s := storepath.NewScanner(append(slices.Clip(candidates), p))
	narFile := filepath.Join(t.TempDir(), "x.nar")
	compressNar(t, p, "none", narFile)
	b, err := os.ReadFile(narFile)
	if err != nil {
		t.Fatal(err)
	}
	// Feed the bytes in awkward pieces to exercise matches across writes.
	for len(b) > 0 {
		n := min(len(b), 7)
		s.Write(b[:n])
		b = b[n:]
	}
	return s.Found()
}

// nixCopy substitutes path from url into an empty store at root with
// signatures required and only trusted trusted.
func nixCopy(t *testing.T, url, root string, trusted signing.NixPublicKey, args ...string) (string, error) {
	env := nixEnv(t, "require-sigs = true", "trusted-public-keys = "+trusted.String())
	a := append([]string{"--extra-experimental-features", "nix-command", "copy", "--from", url, "--to", "local?root=" + root}, args...)
	return runErr(env, "nix", a...)
}

func TestRealNixSubstitutes(t *testing.T) {
	drv, out, closure := sample(t, "subst")
	tmp := t.TempDir()
	key := newKey(t, "gbc-test-1")
	c := openCache(t, filepath.Join(tmp, "cache"), Options{NixKey: key})
	publishClosure(t, c, drv, out, closure)
	url := serve(t, c)

	root := filepath.Join(tmp, "root-good")
	if msg, err := nixCopy(t, url, root, c.PublicKey(), out); err != nil {
		t.Fatalf("nix copy from our cache failed: %v\n%s", err, msg)
	}
	env := nixEnv(t)
	want := run(t, env, "nix-store", "-q", "--hash", out)
	if got := run(t, env, "nix-store", "--store", "local?root="+root, "-q", "--hash", out); got != want {
		t.Fatalf("substituted NarHash %s, want %s", got, want)
	}
	got := run(t, env, "nix-store", "--store", "local?root="+root, "-q", "--references", out)
	if got != run(t, env, "nix-store", "-q", "--references", out) {
		t.Fatalf("substituted references %q", got)
	}

	// Tampered copies of the cache: the signature no longer covers them.
	hashPart := filepath.Base(out)[:32]
	other := nixhash.NewSHA256([32]byte{1, 2, 3})
	tamper := map[string]func(string) string{
		"NarHash": func(s string) string {
			return replaceField(s, "NarHash", other.String())
		},
		"References": func(s string) string { return replaceField(s, "References", "") },
	}
	for name, f := range tamper {
		t.Run("tampered-"+name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			copyDir(t, c.Dir(), dir)
			p := filepath.Join(dir, hashPart+".narinfo")
			b, _ := os.ReadFile(p)
			if err := os.WriteFile(p, []byte(f(string(b))), 0o644); err != nil {
				t.Fatal(err)
			}
			tc := openCache(t, dir, Options{NixKey: key})
			msg, err := nixCopy(t, serve(t, tc), filepath.Join(t.TempDir(), "root"), c.PublicKey(), out)
			if err == nil {
				t.Fatalf("nix accepted a narinfo with tampered %s:\n%s", name, msg)
			}
			if !strings.Contains(msg, "signature") {
				t.Fatalf("refused for an unexpected reason: %s", msg)
			}
		})
	}
	// The two-flavour layout (Guix Signature: first, Nix fields after it) is
	// still what real Nix accepts.
	t.Run("with-guix-signature", func(t *testing.T) {
		gk, err := signing.GenerateGuixKey()
		if err != nil {
			t.Fatal(err)
		}
		gc := openCache(t, filepath.Join(t.TempDir(), "cache"), Options{NixKey: key, GuixKey: &gk, GuixHostname: "gbc.test"})
		publishClosure(t, gc, drv, out, closure)
		raw, _ := os.ReadFile(filepath.Join(gc.Dir(), hashPart+".narinfo"))
		if !bytes.Contains(raw, []byte("\nSignature: 1;gbc.test;")) {
			t.Fatalf("no Guix signature in\n%s", raw)
		}
		if msg, err := nixCopy(t, serve(t, gc), filepath.Join(t.TempDir(), "root"), c.PublicKey(), out); err != nil {
			t.Fatalf("nix refused the two-flavour narinfo: %v\n%s", err, msg)
		}
	})
	t.Run("other-key", func(t *testing.T) {
		oc := openCache(t, filepath.Join(t.TempDir(), "cache"), Options{NixKey: newKey(t, "gbc-test-1")})
		publishClosure(t, oc, drv, out, closure)
		msg, err := nixCopy(t, serve(t, oc), filepath.Join(t.TempDir(), "root"), c.PublicKey(), out)
		if err == nil {
			t.Fatalf("nix accepted another key's signature:\n%s", msg)
		}
		if !strings.Contains(msg, "signature") {
			t.Fatalf("refused for an unexpected reason: %s", msg)
		}
	})
}

func replaceField(s, key, value string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, key+": ") {
			l = key + ": " + value
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
}

// The .drv closure and its input sources, published from this host's store,
// are enough for `nix copy --derivation` into an empty store, and the build
// log is what `nix log` shows from the cache.
func TestRealNixDerivationClosureAndLog(t *testing.T) {
	drv, _, _ := sample(t, "drvclosure")
	tmp := t.TempDir()
	c := openCache(t, filepath.Join(tmp, "cache"), Options{})
	ctx := context.Background()
	paths, err := c.PublishDerivationClosure(ctx, drv, "")
	if err != nil {
		t.Fatal(err)
	}
	env := nixEnv(t)
	want := strings.Fields(run(t, env, "nix-store", "-qR", drv))
	slices.Sort(paths)
	if !slices.Equal(paths, want) {
		t.Fatalf("published %v, nix-store -qR says %v", paths, want)
	}
	url := serve(t, c)
	root := filepath.Join(tmp, "root")
	if msg, err := nixCopy(t, url, root, c.PublicKey(), "--derivation", drv); err != nil {
		t.Fatalf("nix copy --derivation: %v\n%s", err, msg)
	}
	got := run(t, env, "nix-store", "--store", "local?root="+root, "-q", "--hash", drv)
	if got != run(t, env, "nix-store", "-q", "--hash", drv) {
		t.Fatalf("drv hash in target %s", got)
	}
	// Again: everything is present, nothing is re-read.
	if again, err := c.PublishDerivationClosure(ctx, drv, ""); err != nil || len(again) != len(paths) {
		t.Fatalf("second publish: %v %v", again, err)
	}

	logText := strings.Repeat("building drvclosure, a line of log\n", 2000)
	if err := c.WriteLog(ctx, drv, strings.NewReader(logText)); err != nil {
		t.Fatal(err)
	}
	env = nixEnv(t)
	shown, err := runErr(env, "nix", "--extra-experimental-features", "nix-command", "log", "--store", url, drv)
	if err != nil {
		t.Fatalf("nix log: %v\n%s", err, shown)
	}
	if strings.TrimSpace(shown) != strings.TrimSpace(logText) {
		t.Fatalf("nix log shows %d bytes %q..., want %d bytes", len(shown), shown[:min(len(shown), 80)], len(logText))
	}
}

func TestRealNixImportExportStream(t *testing.T) {
	drv, out, _ := sample(t, "import")
	env := nixEnv(t)
	paths := strings.Fields(run(t, env, "nix-store", "-qR", drv, out))
	cmd := exec.Command("nix-store", append([]string{"--export"}, paths...)...)
	cmd.Env = env
	stream, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	c := openCache(t, filepath.Join(tmp, "cache"), Options{})
	got, err := c.Import(context.Background(), bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	slices.Sort(paths)
	if !slices.Equal(got, paths) {
		t.Fatalf("imported %v, want %v", got, paths)
	}
	ni, err := c.Lookup(out)
	if err != nil {
		t.Fatal(err)
	}
	if ni.Deriver != filepath.Base(drv) {
		t.Fatalf("deriver %q, want %s", ni.Deriver, filepath.Base(drv))
	}
	url := serve(t, c)
	if msg, err := nixCopy(t, url, filepath.Join(tmp, "root"), c.PublicKey(), out); err != nil {
		t.Fatalf("nix copy of imported path: %v\n%s", err, msg)
	}
	if msg, err := nixCopy(t, url, filepath.Join(tmp, "root2"), c.PublicKey(), "--derivation", drv); err != nil {
		t.Fatalf("nix copy --derivation of imported drv: %v\n%s", err, msg)
	}
}
