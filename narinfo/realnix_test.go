package narinfo

import (
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
)

// nixEnv is the environment real Nix needs here (root, no build users, no
// network substituters) plus extra settings; XDG_CACHE_HOME keeps Nix's
// narinfo cache out of the user's home.
func nixEnv(t *testing.T, extra ...string) []string {
	conf := append([]string{"build-users-group =", "substituters =", "sandbox = false"}, extra...)
	return append(os.Environ(), "NIX_CONFIG="+strings.Join(conf, "\n"), "XDG_CACHE_HOME="+t.TempDir())
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("%s %v: %v\n%s", name, args, err, msg)
	}
	return strings.TrimSpace(string(out))
}

// writeCache publishes paths (with NARs from nix-store --dump and narinfos
// written and signed by this package) as a file:// binary cache.
func writeCache(t *testing.T, env []string, dir string, key signing.NixSecretKey, paths []string) {
	if err := os.MkdirAll(filepath.Join(dir, "nar"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		cmd := exec.Command("nix-store", "--dump", p)
		cmd.Env = env
		nar, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		h := nixhash.NewSHA256(sha256.Sum256(nar))
		narName := nixhash.Base32(h.Digest) + ".nar"
		if err := os.WriteFile(filepath.Join(dir, "nar", narName), nar, 0o644); err != nil {
			t.Fatal(err)
		}
		var refs []string
		for _, r := range strings.Fields(run(t, env, "nix-store", "-q", "--references", p)) {
			refs = append(refs, filepath.Base(r))
		}
		ni := &NarInfo{
			StorePath: p, URL: "nar/" + narName, Compression: "none",
			FileHash: h, FileSize: uint64(len(nar)), NarHash: h, NarSize: uint64(len(nar)),
			References: refs,
		}
		if err := ni.SignNix(key); err != nil {
			t.Fatal(err)
		}
		hashPart := filepath.Base(p)[:32]
		if err := os.WriteFile(filepath.Join(dir, hashPart+".narinfo"), ni.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRealNixAcceptsOurSignatures(t *testing.T) {
	for _, tool := range []string{"nix", "nix-store", "nix-instantiate"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	tmp := t.TempDir()
	env := nixEnv(t)
	expr := filepath.Join(tmp, "test.nix")
	src := `let dep = builtins.toFile "gbc-narinfo-dep" "gbc narinfo test dependency\n"; in
derivation { name = "gbc-narinfo-test"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo ${dep} > $out" ]; }`
	if err := os.WriteFile(expr, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	drv := run(t, env, "nix-instantiate", expr)
	out := run(t, env, "nix-store", "--realise", drv)
	closure := strings.Fields(run(t, env, "nix-store", "-qR", out))
	if len(closure) != 2 {
		t.Fatalf("closure %v, want output and its dependency", closure)
	}

	good, err := signing.GenerateNixKey("gbc-test-good")
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := signing.GenerateNixKey("gbc-test-good") // same name, other key
	goodCache, badCache := filepath.Join(tmp, "cache-good"), filepath.Join(tmp, "cache-bad")
	writeCache(t, env, goodCache, good, closure)
	writeCache(t, env, badCache, bad, closure)

	trust := []string{"require-sigs = true", "trusted-public-keys = " + good.Public().String()}
	copyTo := func(cache, root string) (string, error) {
		cmd := exec.Command("nix", "--extra-experimental-features", "nix-command", "copy",
			"--from", "file://"+cache, "--to", "local?root="+root, out)
		cmd.Env = nixEnv(t, trust...)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	root := filepath.Join(tmp, "root-good")
	if msg, err := copyTo(goodCache, root); err != nil {
		t.Fatalf("nix copy refused our signatures: %v\n%s", err, msg)
	}
	got := run(t, env, "nix-store", "--store", "local?root="+root, "-q", "--hash", out)
	if !strings.HasPrefix(got, "sha256:") {
		t.Fatalf("path not valid in target store: %q", got)
	}
	msg, err := copyTo(badCache, filepath.Join(tmp, "root-bad"))
	if err == nil {
		t.Fatalf("nix copy accepted a signature by an untrusted key:\n%s", msg)
	}
	if !strings.Contains(msg, "signature") {
		t.Fatalf("refusal for an unexpected reason: %s", msg)
	}
	t.Logf("refused as expected: %s", strings.TrimSpace(msg))
}
