package main

import (
	"bytes"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/help from the current output")

// helpCalls is every help output of the CLI: the command list and each
// command's and subcommand's --help. Commands come from the command table,
// so a new one is covered as soon as it exists; list its subcommands here.
func helpCalls() [][]string {
	calls := [][]string{{"help"}}
	for _, c := range commands() {
		calls = append(calls, []string{c.name, "--help"})
	}
	for _, sub := range [][]string{
		{"coordinator", "migrate-data"},
		{"nar", "dump"}, {"nar", "hash"}, {"nar", "restore"},
		{"drv", "show"},
		{"narinfo", "verify"},
		{"key", "generate"},
	} {
		calls = append(calls, append(sub, "--help"))
	}
	return calls
}

// goldenName is the file under dir for a command line: "gbc-agent.txt" for
// "agent --help", "gbc.txt" for "help".
func goldenName(args []string) string {
	words := []string{"gbc"}
	for _, a := range args {
		if a != "--help" && a != "help" {
			words = append(words, a)
		}
	}
	return strings.Join(words, "-") + ".txt"
}

// TestHelpGolden compares every help output with testdata/help, so a
// changed flag or command shows in review. After an intended change:
//
//	go test ./cmd/gbc -run TestHelpGolden -update   (or: make golden)
func TestHelpGolden(t *testing.T) {
	dir := filepath.Join("testdata", "help")
	if *update {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for _, args := range helpCalls() {
		var out, errOut bytes.Buffer
		code := run(env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, log: slog.New(slog.DiscardHandler)}, args)
		if code != 0 || errOut.Len() > 0 {
			t.Errorf("gbc %s: exit %d, stderr %q; want exit 0 and the help on stdout", strings.Join(args, " "), code, errOut.String())
			continue
		}
		name := goldenName(args)
		want = append(want, name)
		compareGolden(t, filepath.Join(dir, name), out.Bytes(), *update)
	}
	checkNoStaleGolden(t, dir, want)
}

// compareGolden checks got against the golden file path, or writes it.
func compareGolden(t *testing.T, path string, got []byte, write bool) {
	t.Helper()
	if write {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("%v (run: go test ./cmd/gbc -run TestHelpGolden -update)", err)
		return
	}
	if !bytes.Equal(golden, got) {
		t.Errorf("%s differs from the output (after an intended change run: go test ./cmd/gbc -run TestHelpGolden -update)\n--- golden\n%s\n--- got\n%s", path, golden, got)
	}
}

// checkNoStaleGolden fails on golden files no call produces any more.
func checkNoStaleGolden(t *testing.T, dir string, want []string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !slices.Contains(want, e.Name()) {
			t.Errorf("%s: no help output produces this file any more; delete it (or run -update)", filepath.Join(dir, e.Name()))
		}
	}
}
