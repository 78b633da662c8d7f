package main

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/internal/golden"
)

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
		{"cache", "migrate"},
	} {
		calls = append(calls, append(sub, "--help"))
	}
	return calls
}

// goldenName is the file for a command line: "gbc-agent.txt" for
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
// changed flag or command shows in review. After an intended change run
// make golden (go test ./cmd/gbc -run TestHelpGolden -update).
func TestHelpGolden(t *testing.T) {
	g := golden.Open(t, filepath.Join("testdata", "help"))
	for _, args := range helpCalls() {
		var out, errOut bytes.Buffer
		code := run(env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, log: slog.New(slog.DiscardHandler)}, args)
		what := "gbc " + strings.Join(args, " ")
		if code != 0 || errOut.Len() > 0 {
			t.Errorf("%s: exit %d, stderr %q; want exit 0 and the help on stdout", what, code, errOut.String())
			continue
		}
		g.Check(goldenName(args), what, out.Bytes())
	}
	g.Close()
}
