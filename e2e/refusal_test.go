package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRefusals: each refused action gets a clear error and records nothing.
func TestRefusals(t *testing.T) {
	f := newFarm(t)
	drv := instantiate(t, fmt.Sprint(time.Now().UnixNano()), "base")
	stranger := newKey(t, f.dir, "stranger")
	reader := newKey(t, f.dir, "reader")
	f.mustSSH("key add --role reader '" + reader.Pub + "'")
	agentKey := newKey(t, f.dir, "agentkey")
	f.mustSSH(fmt.Sprintf("agent new --name refused --key '%s'", agentKey.Pub))

	t.Run("unknown key", func(t *testing.T) {
		r := f.ssh(stranger, "builds")
		if r.Code != 255 || !strings.Contains(r.Stderr, "Permission denied") {
			t.Fatalf("exit %d, stderr %q", r.Code, r.Stderr)
		}
	})
	for _, c := range []struct {
		name string
		key  sshKey
	}{{"reader key runs build", reader}, {"agent key runs build", agentKey}} {
		t.Run(c.name, func(t *testing.T) {
			r := f.ssh(c.key, "build "+drv)
			if r.Code == 0 {
				t.Fatalf("build accepted: %s", r.Stdout)
			}
			if !strings.Contains(strings.ToLower(r.Stderr+r.Stdout), "not allowed") &&
				!strings.Contains(strings.ToLower(r.Stderr+r.Stdout), "permission") &&
				!strings.Contains(strings.ToLower(r.Stderr+r.Stdout), "denied") {
				t.Errorf("refusal does not say why: stdout %q stderr %q", r.Stdout, r.Stderr)
			}
		})
	}
	t.Run("reader may list", func(t *testing.T) {
		if r := f.ssh(reader, "builds"); r.Code != 0 {
			t.Fatalf("reader builds: exit %d %s", r.Code, r.Stderr)
		}
	})
	t.Run("missing derivation", func(t *testing.T) {
		r := f.ssh(f.admin, "build /nix/store/00000000000000000000000000000000-nothing.drv")
		if r.Code == 0 || r.Stderr == "" {
			t.Fatalf("exit %d stderr %q", r.Code, r.Stderr)
		}
	})
	if out := f.mustSSH("builds --json"); strings.Contains(out, "\"id\"") {
		t.Fatalf("refused builds were recorded: %s", out)
	}

	t.Run("agent with a wrong known_hosts entry", func(t *testing.T) {
		other := newKey(t, f.dir, "not-the-host")
		bad := filepath.Join(f.dir, "bad_known_hosts")
		line := fmt.Sprintf("[127.0.0.1]:%s %s\n", f.port, other.Pub)
		if err := os.WriteFile(bad, []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
		p := start(t, gbcBin, "agent", "--coordinator", f.addr, "--identity", agentKey.Path,
			"--known-hosts", bad, "--backend", "nix", "--daemon", "exec:nix-daemon --stdio", "--work-dir", filepath.Join(f.dir, "w"))
		err, done := p.exited(30 * time.Second)
		if !done {
			t.Fatalf("agent kept running with a changed host key:\n%s", p.log.String())
		}
		if err == nil {
			t.Fatal("agent exited 0 with a changed host key")
		}
		if !strings.Contains(strings.ToLower(p.log.String()), "host key") {
			t.Fatalf("agent's error does not mention the host key:\n%s", p.log.String())
		}
	})

	t.Run("sftp escape with the real sftp client", func(t *testing.T) {
		batch := filepath.Join(f.dir, "batch")
		script := "ls /\nls /uploads/../..\nget /uploads/../../gbc.db " + filepath.Join(f.dir, "stolen") +
			"\nput " + batch + " /uploads/../escape\n"
		if err := os.WriteFile(batch, []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sftp", "-b", "-", "-P", f.port, "-i", agentKey.Path,
			"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-F", "/dev/null",
			"-o", "UserKnownHostsFile="+f.knownHosts, "-o", "StrictHostKeyChecking=yes",
			"agent@127.0.0.1")
		// "-" before each line makes sftp continue after a failed command.
		cmd.Stdin = strings.NewReader(strings.ReplaceAll("-"+strings.TrimSpace(script), "\n", "\n-") + "\n")
		out, _ := cmd.CombinedOutput()
		if _, err := os.Stat(filepath.Join(f.dir, "stolen")); err == nil {
			t.Fatalf("sftp read a file outside the agent's area:\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(f.state, "escape")); err == nil {
			t.Fatalf("sftp wrote outside the agent's area:\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(f.state, "uploads", "escape")); err == nil {
			t.Fatalf("sftp wrote outside the agent's area:\n%s", out)
		}
		if strings.Contains(string(out), "gbc.db") && !strings.Contains(string(out), "denied") &&
			!strings.Contains(string(out), "not found") && !strings.Contains(string(out), "No such") {
			t.Fatalf("sftp listing shows the state dir:\n%s", out)
		}
	})
}
