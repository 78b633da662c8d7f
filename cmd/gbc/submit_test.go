package main

import (
	"bytes"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// gbc submit takes every flag of the coordinator's build command (its
// help, kept in sshd's golden file), so what an operator can say with ssh
// they can say with gbc submit.
func TestSubmitHasTheBuildFlags(t *testing.T) {
	golden, err := os.ReadFile("../../sshd/testdata/help/build.txt")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, m := range regexp.MustCompile(`(?m)^\s+--([a-z-]+)`).FindAllStringSubmatch(string(golden), -1) {
		want = append(want, m[1])
	}
	if len(want) < 5 {
		t.Fatalf("read %d flags from the build command's help", len(want))
	}
	fs := pflag.NewFlagSet("submit", pflag.ContinueOnError)
	b := addBuildFlags(fs)
	var got []string
	fs.VisitAll(func(f *pflag.Flag) { got = append(got, f.Name) })
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("gbc submit's build flags %v, want the build command's %v", got, want)
	}

	// They are passed on as given.
	if err := fs.Parse([]string{"--ensure-all-related-derivation-outputs-have-successful-builds", "--tag", "a=1", "--tag", "b=2", "--timeout", "90s", "--json"}); err != nil {
		t.Fatal(err)
	}
	args := b.args(fs)
	wantArgs := []string{"--ensure-all-related-derivation-outputs-have-successful-builds=true", "--timeout=1m30s", "--json=true", "--tag=a=1", "--tag=b=2"}
	if !slices.Equal(args, wantArgs) {
		t.Fatalf("passed on %q, want %q", args, wantArgs)
	}
}

// gbc migrate-data is refused with the command line that works.
func TestMisplacedSubcommandSaysTheRightCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, log: slog.New(slog.DiscardHandler)},
		[]string{"migrate-data", "--from", "sqlite:x.db"})
	want := "gbc: migrate-data is a subcommand of coordinator: run 'gbc coordinator migrate-data --from sqlite:x.db'\n"
	if code != 2 || errOut.String() != want {
		t.Fatalf("exit %d, stderr %q, want 2 and %q", code, errOut.String(), want)
	}
}
