package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func narEnv(stdin io.Reader) (env, *bytes.Buffer) {
	var out bytes.Buffer
	return env{stdin: stdin, stdout: &out, stderr: io.Discard, log: slog.New(slog.DiscardHandler)}, &out
}

func nixOut(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed", name)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "NIX_CONFIG=build-users-group =\nsubstituters =\nsandbox = false")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out
}

// narTestTree makes a small tree with the node kinds NAR distinguishes.
func narTestTree(t *testing.T) string {
	root := filepath.Join(t.TempDir(), "tree")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "sub", "empty"), 0o755))
	must(os.WriteFile(filepath.Join(root, "a.txt"), []byte("hello\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "run"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chmod(filepath.Join(root, "run"), 0o755))
	must(os.WriteFile(filepath.Join(root, "sub", "\xffodd name"), nil, 0o644))
	must(os.Symlink("../a.txt", filepath.Join(root, "sub", "link")))
	return root
}

func TestNarCommands(t *testing.T) {
	tree := narTestTree(t)
	want := nixOut(t, "nix-store", "--dump", tree)
	ctx := context.Background()

	e, out := narEnv(nil)
	if err := runNar(ctx, e, []string{"dump", tree}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("gbc nar dump differs from nix-store --dump (%d vs %d bytes)", out.Len(), len(want))
	}

	e, out = narEnv(nil)
	if err := runNar(ctx, e, []string{"hash", tree}); err != nil {
		t.Fatal(err)
	}
	wantHash := "sha256:" + strings.TrimSpace(string(nixOut(t, "nix-hash", "--type", "sha256", "--base32", tree)))
	if got := strings.TrimSpace(out.String()); got != wantHash {
		t.Fatalf("gbc nar hash = %s, nix-hash says %s", got, wantHash)
	}

	dest := filepath.Join(t.TempDir(), "restored")
	e, _ = narEnv(bytes.NewReader(want))
	if err := runNar(ctx, e, []string{"restore", dest}); err != nil {
		t.Fatal(err)
	}
	if again := nixOut(t, "nix-store", "--dump", dest); !bytes.Equal(again, want) {
		t.Fatal("nix-store --dump of the restored tree differs")
	}
	e, _ = narEnv(bytes.NewReader(want))
	if err := runNar(ctx, e, []string{"restore", dest}); err == nil {
		t.Fatal("restore over an existing directory succeeded")
	}
}

func TestNarUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"frobnicate"},
		{"dump"},
		{"hash", "a", "b"},
		{"restore", "--bogus", "x"},
	} {
		e, _ := narEnv(nil)
		err := runNar(context.Background(), e, args)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("runNar(%q) = %v, want a usageError", args, err)
		}
	}
	for _, args := range [][]string{{"--help"}, {"dump", "--help"}, {"restore", "-h"}} {
		e, out := narEnv(nil)
		if err := runNar(context.Background(), e, args); err != nil || !strings.Contains(out.String(), "usage:") {
			t.Errorf("runNar(%q) = %v, output %q", args, err, out.String())
		}
	}
	// A missing path is a runtime error, not a usage error.
	e, _ := narEnv(nil)
	err := runNar(context.Background(), e, []string{"hash", filepath.Join(t.TempDir(), "missing")})
	var ue usageError
	if err == nil || errors.As(err, &ue) {
		t.Errorf("hash of a missing path = %v", err)
	}
}
