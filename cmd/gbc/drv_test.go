package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func drvTestEnv() (env, *bytes.Buffer) {
	var out bytes.Buffer
	return env{stdin: strings.NewReader(""), stdout: &out, stderr: io.Discard, log: slog.New(slog.DiscardHandler)}, &out
}

// drvNix runs a nix tool with the settings root needs here; the test sets
// them itself rather than trusting the caller's environment.
func drvNix(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed", name)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "NIX_CONFIG=build-users-group =\nsubstituters =\nsandbox = false")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.Bytes())
	}
	return out
}

func sameJSON(t *testing.T, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("gbc output is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("reference is not JSON: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("JSON differs\n got: %s\nwant: %s", got, want)
	}
}

func TestDrvShowVectors(t *testing.T) {
	jsons, _ := filepath.Glob("../../derivation/testdata/*.json")
	if len(jsons) == 0 {
		t.Fatal("no vectors")
	}
	var all []string
	for _, j := range jsons {
		drv := strings.TrimSuffix(j, ".json") + ".drv"
		all = append(all, drv)
		t.Run(filepath.Base(drv), func(t *testing.T) {
			want, err := os.ReadFile(j)
			if err != nil {
				t.Fatal(err)
			}
			e, out := drvTestEnv()
			if err := runDrv(context.Background(), e, []string{"show", drv}); err != nil {
				t.Fatal(err)
			}
			sameJSON(t, out.Bytes(), want)
		})
	}
	// Several files make one object with one key each.
	e, out := drvTestEnv()
	if err := runDrv(context.Background(), e, []string{"show", all[0], all[1], all[0]}); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil || len(m) != 2 {
		t.Fatalf("two files: %d keys, %v", len(m), err)
	}
}

func TestDrvShowErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.drv")
	if err := os.WriteFile(bad, []byte(`Derive([("out","/nix/store/x","","")],`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args  []string
		usage bool
		msg   string
	}{
		{nil, true, "missing subcommand"},
		{[]string{"frob"}, true, "unknown subcommand"},
		{[]string{"show"}, true, "no .drv files"},
		{[]string{"show", "--bogus", "x"}, true, "unknown flag"},
		{[]string{"show", "/nonexistent/x.drv"}, false, "no such file"},
		{[]string{"show", bad}, false, "offset 15"},
	}
	for _, tc := range tests {
		e, _ := drvTestEnv()
		err := runDrv(context.Background(), e, tc.args)
		_, isUsage := err.(usageError)
		if err == nil || isUsage != tc.usage || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v: err = %v (usage %v), want %q usage=%v", tc.args, err, isUsage, tc.msg, tc.usage)
		}
	}
	for _, args := range [][]string{{"--help"}, {"show", "--help"}} {
		e, out := drvTestEnv()
		if err := runDrv(context.Background(), e, args); err != nil || !strings.Contains(out.String(), "usage: gbc drv") {
			t.Errorf("%v: %v %q", args, err, out.String())
		}
	}
	e, out := drvTestEnv()
	_ = runDrv(context.Background(), e, []string{"show", "--help"})
	if !strings.Contains(out.String(), "--recursive") {
		t.Errorf("show --help lacks flags: %q", out.String())
	}
}

// Against the real thing: instantiate derivations covering multiple
// outputs, input derivations, input sources, escapes, a FOD and structured
// attrs, then compare with `nix show-derivation` (plain and --recursive).
func TestDrvShowMatchesNix(t *testing.T) {
	if _, err := exec.LookPath("nix"); err != nil {
		t.Skip("nix not installed")
	}
	expr := filepath.Join(t.TempDir(), "t.nix")
	src := `let
  sys = "x86_64-linux";
  fod = derivation { name = "gbc-drvtest-fod"; system = sys; builder = "/bin/sh"; args = ["-c" "echo hi > $out"];
    outputHashMode = "recursive"; outputHashAlgo = "sha256";
    outputHash = "0000000000000000000000000000000000000000000000000000"; };
  st = derivation { name = "gbc-drvtest-st"; system = sys; builder = "/bin/sh"; __structuredAttrs = true;
    requiredSystemFeatures = [ "kvm" ]; xs = [ 1 "a\"b" ]; };
in derivation {
  name = "gbc-drvtest-top";
  system = sys;
  builder = "/bin/sh";
  outputs = [ "out" "doc" "bin" ];
  args = [ "-c" "echo ${fod} ${st} > $out" (builtins.toFile "gbc-drvtest-src" "text\n") ];
  weird = "q\" b\\ n\n r\r t\t \u00e9 $ ";
  requiredSystemFeatures = "big-parallel kvm";
}
`
	if err := os.WriteFile(expr, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	drv := strings.TrimSpace(string(drvNix(t, "nix-instantiate", expr)))
	for _, rec := range []bool{false, true} {
		args := []string{"--extra-experimental-features", "nix-command", "show-derivation", drv}
		ours := []string{"show", drv}
		if rec {
			args = append(args, "--recursive")
			ours = append(ours, "--recursive")
		}
		want := drvNix(t, "nix", args...)
		e, out := drvTestEnv()
		if err := runDrv(context.Background(), e, ours); err != nil {
			t.Fatal(err)
		}
		sameJSON(t, out.Bytes(), want)
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("recursive=%v: same JSON but not byte-identical\n got %s\nwant %s", rec, out.Bytes(), want)
		}
	}
}
