package backend

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Recorded from Nix 2.8 (nix-store --realise, stderr tails).
const (
	nixFailTail = `this derivation will be built:
  /nix/store/3p6dv1w172qhjfbli7cwz6yji84bn8cy-t-fail.drv
building '/nix/store/3p6dv1w172qhjfbli7cwz6yji84bn8cy-t-fail.drv'...
failing
error: builder for '/nix/store/3p6dv1w172qhjfbli7cwz6yji84bn8cy-t-fail.drv' failed with exit code 1
`
	nixSilentTail  = "start\nerror: building of '/nix/store/0hp6nqhgss5238sadx47kklcknjhfxyr-t-silent.drv!*' from .drv file timed out after 1 seconds of silence\n"
	nixTimeoutTail = "tick\nerror: building of '/nix/store/98s0zxqcxjbh445sjaln7d35jdva9bcz-t-slow.drv!*' from .drv file timed out after 1 seconds\n"
	nixMissingTail = `don't know how to build these paths:
  /nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv
error: cannot build missing derivation '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv'
`
)

func TestClassifyNix(t *testing.T) {
	tests := []struct {
		name    string
		exit    int
		tail    string
		want    Outcome
		missing []string
	}{
		{"ok", 0, "building…\nhello\n", Succeeded, nil},
		{"builder failed", 100, nixFailTail, BuildFailed, nil},
		{"silent", 101, nixSilentTail, SilentTimedOut, nil},
		{"timeout", 101, nixTimeoutTail, TimedOut, nil},
		{"hash mismatch", 102, "error: hash mismatch in fixed-output derivation", BuildFailed, nil},
		{"missing drv", 1, nixMissingTail, SetupFailed, []string{"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv"}},
		{"daemon down", 1, "error: cannot connect to socket at '/nix/var/nix/daemon-socket/socket'", SetupFailed, nil},
		{"killed", -1, "", SetupFailed, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ClassifyNix("/nix/store/x.drv", tt.exit, tt.tail)
			if r.Outcome != tt.want || r.ExitCode != tt.exit || !reflect.DeepEqual(r.Missing, tt.missing) {
				t.Fatalf("got %+v, want %v missing %v", r, tt.want, tt.missing)
			}
			if tt.exit != 0 && tt.tail != "" && r.Message == "" {
				t.Fatalf("no message for %q", tt.tail)
			}
		})
	}
}

func TestParseNixDryRun(t *testing.T) {
	const drv = "/nix/store/dbv44s8sv3n06fl36rl2395lna7gxm08-t-ok.drv"
	tests := []struct {
		name, stderr string
		want         []string
	}{
		{"only itself", "this derivation will be built:\n  " + drv + "\n", nil},
		{"with inputs", "these 3 derivations will be built:\n  /nix/store/a-dep.drv\n  " + drv + "\n  /nix/store/b-dep.drv\nthese 2 paths will be fetched (0.01 MiB download, 0.02 MiB unpacked):\n  /nix/store/c-sub\n  /nix/store/d-sub\n",
			[]string{"/nix/store/a-dep.drv", "/nix/store/b-dep.drv"}},
		{"nothing", "", nil},
		{"missing", nixMissingTail, []string{"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseNixDryRun(drv, tt.stderr); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCommandLines(t *testing.T) {
	opts := Options{Timeout: 90 * time.Second, MaxSilentTime: 1500 * time.Millisecond, GCRoot: "/w/b/result"}
	if got, want := NixRealiseArgs("/nix/store/x.drv", opts), []string{"--realise", "/nix/store/x.drv", "--timeout", "90", "--max-silent-time", "2", "--add-root", "/w/b/result"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nix: %q, want %q", got, want)
	}
	if got, want := NixRealiseArgs("/nix/store/x.drv", Options{}), []string{"--realise", "/nix/store/x.drv"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nix without limits: %q, want %q", got, want)
	}
	if got, want := GuixBuildArgs("/gnu/store/x.drv", opts), []string{"build", "--verbosity=2", "--timeout=90", "--max-silent-time=2", "--root=/w/b/result", "/gnu/store/x.drv"}; !reflect.DeepEqual(got, want) {
		t.Errorf("guix: %q, want %q", got, want)
	}
}

// Guix output as printed by guix 1.4 (guix build and guix-daemon); Guix is
// not installable here, so these stand in for a real daemon.
func TestClassifyGuix(t *testing.T) {
	tests := []struct {
		name string
		exit int
		tail string
		want Outcome
	}{
		{"ok", 0, "successfully built /gnu/store/x.drv\n", Succeeded},
		{"failed", 1, "builder for `/gnu/store/abc-hello.drv' failed with exit code 1\nbuild of /gnu/store/abc-hello.drv failed\nguix build: error: build of `/gnu/store/abc-hello.drv' failed\n", BuildFailed},
		{"silent", 1, "building of `/gnu/store/abc-hello.drv' timed out after 5 seconds of silence\nguix build: error: build of `/gnu/store/abc-hello.drv' failed\n", SilentTimedOut},
		{"timeout", 1, "building of `/gnu/store/abc-hello.drv' timed out after 60 seconds\nguix build: error: build of `/gnu/store/abc-hello.drv' failed\n", TimedOut},
		{"no daemon", 1, "guix build: error: failed to connect to `/var/guix/daemon-socket/socket': No such file or directory\n", SetupFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := ClassifyGuix(tt.exit, tt.tail); r.Outcome != tt.want {
				t.Fatalf("got %+v, want %v", r, tt.want)
			}
		})
	}
}

func TestParseGuix(t *testing.T) {
	const drv = "/gnu/store/abc-hello-2.12.drv"
	stderr := "substitute: updating substitutes from 'https://ci.guix.gnu.org'... 100.0%\n" +
		"The following derivations would be built:\n   /gnu/store/def-dep.drv\n   " + drv + "\n" +
		"The following file would be downloaded:\n   /gnu/store/ghi-glibc\n"
	if got, want := ParseGuixDryRun(drv, stderr), []string{"/gnu/store/def-dep.drv"}; !reflect.DeepEqual(got, want) {
		t.Errorf("dry run: %q, want %q", got, want)
	}
	if got := ParseGuixDryRun(drv, "The following derivation would be built:\n   "+drv+"\n"); got != nil {
		t.Errorf("only itself: %q", got)
	}
	if got, want := ParseGuixVersion([]byte("guix (GNU Guix) 1.4.0\nCopyright (C) 2022 the Guix authors\n")), "guix (GNU Guix) 1.4.0"; got != want {
		t.Errorf("version %q, want %q", got, want)
	}
}

func TestEnviron(t *testing.T) {
	t.Setenv("NIX_CONFIG", "a = 1")
	env := environ("NIX_CONFIG", "b = 2\nc = 3")
	n := 0
	for _, kv := range env {
		if strings.HasPrefix(kv, "NIX_CONFIG=") {
			n++
			if kv != "NIX_CONFIG=a = 1\nb = 2\nc = 3" {
				t.Fatalf("got %q", kv)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d NIX_CONFIG entries", n)
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 8}
	fmt.Fprint(tb, "0123456789")
	fmt.Fprint(tb, "ab")
	if got := tb.String(); got != "456789ab" {
		t.Fatalf("got %q", got)
	}
}

// testNixConfig is what running Nix as root in a container needs.
const testNixConfig = "build-users-group =\nsubstituters =\nsandbox = false"

// instantiate writes a /bin/sh derivation and returns its .drv path.
// The nonce makes every test run build afresh.
func instantiate(t *testing.T, script string) string {
	t.Helper()
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		t.Skip("nix-instantiate not installed")
	}
	dir := t.TempDir()
	expr := fmt.Sprintf(`derivation { name = "gbc-backend-test"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" %q ]; nonce = "%d"; }`,
		script, time.Now().UnixNano())
	f := filepath.Join(dir, "t.nix")
	if err := os.WriteFile(f, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nix-instantiate", f)
	cmd.Env = environ("NIX_CONFIG", testNixConfig)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestNixRealise(t *testing.T) {
	ctx := context.Background()
	n := &Nix{Config: testNixConfig}
	tests := []struct {
		name   string
		script string
		opts   Options
		want   Outcome
	}{
		{"ok", "echo tick; echo hi > $out", Options{}, Succeeded},
		{"fail", "echo tick; exit 1", Options{}, BuildFailed},
		{"silent", "echo tick; while :; do :; done", Options{MaxSilentTime: time.Second}, SilentTimedOut},
		// /bin/sh only; no sleep in the sandbox-less builder's PATH.
		{"timeout", "while :; do echo tick; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; done", Options{Timeout: time.Second, MaxSilentTime: 30 * time.Second}, TimedOut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			drv := instantiate(t, tt.script)
			var log bytes.Buffer
			r, err := n.Realise(ctx, drv, tt.opts, &log)
			if err != nil {
				t.Fatal(err)
			}
			if r.Outcome != tt.want {
				t.Fatalf("outcome %v (%+v), want %v; log:\n%s", r.Outcome, r, tt.want, log.String())
			}
			if !strings.Contains(log.String(), "tick\n") {
				t.Errorf("log lacks builder output: %q", log.String())
			}
		})
	}
}

func TestNixQueries(t *testing.T) {
	ctx := context.Background()
	n := &Nix{Config: testNixConfig}
	v, err := n.Version(ctx)
	if err != nil || !strings.Contains(v, "Nix") {
		t.Fatalf("version %q, %v", v, err)
	}
	drv := instantiate(t, "echo hi > $out")
	missing, err := n.Missing(ctx, drv)
	if err != nil || len(missing) != 0 {
		t.Fatalf("missing %q, %v", missing, err)
	}
	root := filepath.Join(t.TempDir(), "result")
	if r, err := n.Realise(ctx, drv, Options{GCRoot: root}, nil); err != nil || r.Outcome != Succeeded {
		t.Fatalf("realise: %+v %v", r, err)
	}
	out, err := os.Readlink(root)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := n.References(ctx, out)
	if err != nil || len(refs) != 0 {
		t.Fatalf("references %q, %v", refs, err)
	}
	bogus := "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv"
	if missing, err := n.Missing(ctx, bogus); err != nil || !reflect.DeepEqual(missing, []string{bogus}) {
		t.Fatalf("missing for absent drv: %q, %v", missing, err)
	}
	if r, err := n.Realise(ctx, bogus, Options{}, nil); err != nil || r.Outcome != SetupFailed || len(r.Missing) != 1 {
		t.Fatalf("realise absent drv: %+v %v", r, err)
	}
}

// FuzzParseOutput feeds arbitrary tool output to every parser: they must
// not panic, and every path they return must come from the input.
func FuzzParseOutput(f *testing.F) {
	for _, s := range []string{nixFailTail, nixSilentTail, nixTimeoutTail, nixMissingTail,
		"these 3 derivations will be built:\n  /nix/store/a-dep.drv\n  /nix/store/x.drv\n",
		"The following derivations would be built:\n   /gnu/store/def-dep.drv\n"} {
		f.Add(s, 101)
	}
	f.Fuzz(func(t *testing.T, text string, exit int) {
		check := func(what string, paths []string) {
			for _, p := range paths {
				if !strings.Contains(text, p) {
					t.Fatalf("%s returned %q, not in the input", what, p)
				}
			}
		}
		r := ClassifyNix("/nix/store/x.drv", exit, text)
		check("ClassifyNix", r.Missing)
		if exit == 0 && r.Outcome != Succeeded {
			t.Fatalf("exit 0 classified %v", r.Outcome)
		}
		g := ClassifyGuix(exit, text)
		if exit == 0 && g.Outcome != Succeeded {
			t.Fatalf("guix exit 0 classified %v", g.Outcome)
		}
		check("ParseNixDryRun", ParseNixDryRun("/nix/store/x.drv", text))
		check("ParseGuixDryRun", ParseGuixDryRun("/gnu/store/x.drv", text))
		_ = ParseGuixVersion([]byte(text))
	})
}
