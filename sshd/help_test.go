package sshd

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/help from the current output")

// TestHelpGolden runs `help` and `<command> --help` for every command of
// the table over a real SSH session and compares each output with
// testdata/help, so a changed command or flag shows in review. After an
// intended change:
//
//	go test ./sshd -run TestHelpGolden -update   (or: make golden)
func TestHelpGolden(t *testing.T) {
	e := newEnv(t, 1<<16)
	dir := filepath.Join("testdata", "help")
	if *update {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	calls := map[string]string{"help": "commands.txt"}
	for _, c := range commandTable() {
		calls[c.name()+" --help"] = strings.ReplaceAll(c.name(), " ", "-") + ".txt"
	}
	var want []string
	for cmd, name := range calls {
		r := e.run(e.admin, cmd)
		if r.code != 0 || r.stderr != "" {
			t.Errorf("%s: exit %d, stderr %q; want exit 0 and the help on stdout", cmd, r.code, r.stderr)
			continue
		}
		want = append(want, name)
		path := filepath.Join(dir, name)
		if *update {
			if err := os.WriteFile(path, []byte(r.stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		golden, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v (run: go test ./sshd -run TestHelpGolden -update)", cmd, err)
			continue
		}
		if !bytes.Equal(golden, []byte(r.stdout)) {
			t.Errorf("%s differs from the output of %q (after an intended change run: go test ./sshd -run TestHelpGolden -update)\n--- golden\n%s\n--- got\n%s", path, cmd, golden, r.stdout)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range entries {
		if !slices.Contains(want, de.Name()) {
			t.Errorf("%s: no help output produces this file any more; delete it (or run -update)", filepath.Join(dir, de.Name()))
		}
	}
}
