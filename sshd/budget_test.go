package sshd

import (
	"os"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/protocol"
)

// TestUploadNamesAndBudget: over SFTP an agent may create only the files
// its build's outputs produce (<output>.nar plus a known compression
// suffix, one per output), and all its unverified uploads together stay
// within its byte budget; every refusal says why in the SFTP status.
// Removing a file gives its bytes back.
func TestUploadNamesAndBudget(t *testing.T) {
	e := newEnvWith(t, func(c *Config) {
		c.MaxUploadBytes = 1 << 20
		c.MaxAgentUploadBytes = 1000
	})
	_, key := e.newAgent()
	a := e.agentSession(key)
	a.hello(protocol.Hello{Systems: []string{"x86_64-linux"}, MaxParallelBuilds: 2, StoreDir: "/nix/store", Backend: "nix"})
	for _, n := range []string{"q1", "q2"} {
		if r := e.run(e.operator, "build "+e.drv(n)); r.code != 0 {
			t.Fatalf("build: %s", r.stderr)
		}
	}
	var dirs []string
	for range 2 {
		b, ok := a.read().(*protocol.Build)
		if !ok {
			t.Fatal("no build pushed")
		}
		dirs = append(dirs, b.UploadDir)
	}
	cl := e.sftpClient(key)
	write := func(p string, off int64, n int) error {
		t.Helper()
		f, err := cl.OpenFile(p, os.O_WRONLY|os.O_CREATE)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteAt([]byte(strings.Repeat("x", n)), off)
		return err
	}
	refused := func(what string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a refusal saying %q", what, err, want)
		}
	}
	for _, name := range []string{"evil.txt", "out.nar.exe", "dev.nar.zst", "out.narx", "out"} {
		_, err := cl.Create(dirs[0] + "/" + name)
		refused(name, err, "not an upload name of this build")
	}
	if err := write(dirs[0]+"/out.nar.zst", 0, 600); err != nil {
		t.Fatalf("upload 600 bytes: %v", err)
	}
	_, err := cl.Create(dirs[0] + "/out.nar.xz")
	refused("a second file for out", err, "already has out.nar.zst")
	if err := write(dirs[1]+"/out.nar", 0, 300); err != nil {
		t.Fatalf("upload 300 more bytes for the other build: %v", err)
	}
	refused("past the budget", write(dirs[1]+"/out.nar", 300, 200), "over its budget of 1000")
	refused("past the budget by truncation", cl.Truncate(dirs[1]+"/out.nar", 500), "over its budget of 1000")
	if err := cl.Remove(dirs[0] + "/out.nar.zst"); err != nil {
		t.Fatal(err)
	}
	if err := write(dirs[1]+"/out.nar", 300, 200); err != nil {
		t.Fatalf("upload after removing a file: %v", err)
	}
}
