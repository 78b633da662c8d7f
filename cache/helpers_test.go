package cache

import (
	"context"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/signing"
)

func newKey(t testing.TB, name string) signing.NixSecretKey {
	t.Helper()
	k, err := signing.GenerateNixKey(name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func openCache(t testing.TB, dir string, opts Options) *Cache {
	t.Helper()
	if opts.NixKey.Name == "" {
		opts.NixKey = newKey(t, "gbc-test-1")
	}
	c, err := Open(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// compressNar does what an agent does before uploading: dump the path,
// compress, and hash both streams on the way.
func compressNar(t testing.TB, path, comp, dst string) Entry {
	t.Helper()
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fileHW := nar.NewHashingWriter()
	cw, err := compression.NewWriter(io.MultiWriter(f, fileHW), comp)
	if err != nil {
		t.Fatal(err)
	}
	narHW := nar.NewHashingWriter()
	if err := nar.Dump(io.MultiWriter(cw, narHW), path); err != nil {
		t.Fatal(err)
	}
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	return Entry{NarHash: narHW.Sum(), NarSize: narHW.Size(), FileHash: fileHW.Sum(), FileSize: fileHW.Size(), Compression: comp}
}

func needNix(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"nix", "nix-store", "nix-instantiate"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

// nixEnv is what Nix needs to run as root here, plus extra settings. A fresh
// XDG_CACHE_HOME per call keeps Nix's narinfo disk cache from remembering
// answers between the good, tampered and other-key runs.
func nixEnv(t *testing.T, extra ...string) []string {
	conf := append([]string{"build-users-group =", "substituters =", "sandbox = false"}, extra...)
	return append(os.Environ(), "NIX_CONFIG="+strings.Join(conf, "\n"), "XDG_CACHE_HOME="+t.TempDir())
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(env, name, args...)
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return strings.TrimSpace(out)
}

func runErr(env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out) + stderr.String(), err
	}
	return string(out), nil
}

// serve runs the cache's handler on a loopback port.
func serve(t testing.TB, c *Cache) string {
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// sample builds a small derivation with /bin/sh whose output refers to a
// builtins.toFile source, so references matter. It returns the .drv, its
// output and the output's closure.
func sample(t *testing.T, tag string) (drv, out string, closure []string) {
	needNix(t)
	env := nixEnv(t)
	expr := filepath.Join(t.TempDir(), "test.nix")
	src := `let dep = builtins.toFile "gbc-cache-dep-` + tag + `" "gbc cache test dependency ` + tag + `\n"; in
derivation { name = "gbc-cache-` + tag + `"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo ${dep} > $out; echo building ` + tag + `; echo to stderr >&2" ]; }`
	if err := os.WriteFile(expr, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	drv = run(t, env, "nix-instantiate", expr)
	out = run(t, env, "nix-store", "--realise", drv)
	closure = strings.Fields(run(t, env, "nix-store", "-qR", out))
	if len(closure) != 2 {
		t.Fatalf("closure %v, want output and its dependency", closure)
	}
	return drv, out, closure
}

// tempFiles lists the temp files anywhere under the cache directory
// (spool's directories themselves are not files).
func tempFiles(t testing.TB, c *Cache) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(c.Dir(), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasPrefix(d.Name(), tmpPrefix) {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
