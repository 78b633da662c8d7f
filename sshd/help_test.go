package sshd

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/internal/golden"
)

// TestHelpGolden runs `help` and `<command> --help` for every command of
// the table over a real SSH session and compares each output with
// testdata/help, so a changed command or flag shows in review. After an
// intended change run make golden (go test ./sshd -run TestHelpGolden -update).
func TestHelpGolden(t *testing.T) {
	e := newEnv(t, 1<<16)
	g := golden.Open(t, filepath.Join("testdata", "help"))
	calls := [][2]string{{"help", "commands.txt"}}
	for _, c := range commandTable() {
		calls = append(calls, [2]string{c.name() + " --help", strings.ReplaceAll(c.name(), " ", "-") + ".txt"})
	}
	for _, call := range calls {
		cmd, name := call[0], call[1]
		r := e.run(e.admin, cmd)
		if r.code != 0 || r.stderr != "" {
			t.Errorf("%s: exit %d, stderr %q; want exit 0 and the help on stdout", cmd, r.code, r.stderr)
			continue
		}
		g.Check(name, cmd, []byte(r.stdout))
	}
	g.Close()
}
