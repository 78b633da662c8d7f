package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/signing"
)

// Trust as deployed: a trusted agent (root, its own nix-daemon --stdio)
// and untrusted ones (a non-root user on a nix-daemon's socket, the daemon
// run as root with its own settings). An untrusted client's imports are
// checked by the daemon against its trusted-public-keys, so they succeed
// only when the operator has put the coordinator's key there.

// nobody is the unprivileged user the untrusted agents run as.
const nobody = "65534"

// TestAgentTrust: agent one is trusted (root, exec:nix-daemon --stdio)
// and builds base; agent two is untrusted, its daemon trusts the
// coordinator's key, and builds left from base and its .drv imported with
// the cache's signatures, which the daemon checks and keeps; agent three
// is untrusted and its daemon trusts another key, so the same imports are
// refused and its build is a setup failure, not a build failure.
func TestAgentTrust(t *testing.T) {
	requireNamespaces(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not found (util-linux)")
	}
	dirs := mkdirs(t, "coord", "one", "two", "three")
	coordNix, oneNix, twoNix, threeNix := dirs[0], dirs[1], dirs[2], dirs[3]
	nonce := fmt.Sprint(time.Now().UnixNano())
	drv := map[string]string{}
	for _, attr := range []string{"base", "left", "right"} {
		drv[attr] = nsRun(t, coordNix, "nix-instantiate", "../examples/graph.nix", "--argstr", "nonce", nonce, "-A", attr)
	}
	f, _ := newNSFarm(t, coordNix, "--max-setup-failures", "1")
	pub, err := os.ReadFile(filepath.Join(f.state, "signing-key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	coordKey := strings.TrimSpace(string(pub))
	other, err := signing.GenerateNixKey("someone-else-1")
	if err != nil {
		t.Fatal(err)
	}
	otherKey := other.Public().String()

	// addNSAgent runs the agent as root on exec:nix-daemon --stdio: trusted.
	one := f.addNSAgent(oneNix, "trusted", "--require-tag", "lane=one")
	two := f.addUntrustedAgent(twoNix, "untrusted", coordKey, "--require-tag", "lane=two")
	three := f.addUntrustedAgent(threeNix, "untrusted-other-key", otherKey, "--require-tag", "lane=three")

	r := f.ssh(f.admin, "build --wait --tag lane=one "+drv["base"])
	if r.Code != 0 {
		t.Fatalf("base on the trusted agent: exit %d\n%s\n%s\nagent:\n%s", r.Code, r.Stdout, r.Stderr, one.log.String())
	}
	base := f.show(lines(r.Stdout)[0])
	if base.State != "succeeded" || base.Agent != one.ID {
		t.Fatalf("base: %s on %s", base.State, base.Agent)
	}

	r = f.ssh(f.admin, "build --wait --tag lane=two "+drv["left"])
	if r.Code != 0 {
		t.Fatalf("left on the untrusted agent: exit %d\n%s\n%s\nagent:\n%s", r.Code, r.Stdout, r.Stderr, two.log.String())
	}
	left := f.show(lines(r.Stdout)[0])
	if left.State != "succeeded" || left.Agent != two.ID {
		t.Fatalf("left: %s on %s", left.State, left.Agent)
	}
	// The daemon kept the coordinator's signature on what was imported.
	basePath := base.Outputs[0].Path
	sigs := nsRun(t, twoNix, "nix", "--extra-experimental-features", "nix-command", "path-info", "--sigs", basePath)
	keyName, _, _ := strings.Cut(coordKey, ":")
	if !strings.Contains(sigs, keyName+":") {
		t.Fatalf("base in the untrusted agent's store carries no signature by %s: %q", keyName, sigs)
	}
	if got := narHashIn(t, twoNix, basePath); got.String() != base.Outputs[0].NarHash {
		t.Fatalf("base imported with NarHash %s, built as %s", got, base.Outputs[0].NarHash)
	}

	r = f.ssh(f.admin, "build --wait --tag lane=three "+drv["right"])
	if r.Code == 0 {
		t.Fatalf("right on an agent whose daemon does not trust the coordinator's key succeeded:\n%s", r.Stdout)
	}
	var right struct {
		State         string `json:"state"`
		FailureReason string `json:"failure_reason"`
		Attempts      []struct {
			Agent string `json:"agent"`
			Kind  string `json:"kind"`
		} `json:"attempts"`
	}
	if err := jsonUnmarshal(f.mustSSH("build show "+lines(r.Stdout)[0]+" --json"), &right); err != nil {
		t.Fatal(err)
	}
	// A setup failure (the agent's store refused the import), not the
	// derivation's fault; the daemon's refusal says why.
	if right.State != "failed" || len(right.Attempts) != 1 || right.Attempts[0].Agent != three.ID ||
		right.Attempts[0].Kind != "setup" || !strings.Contains(right.FailureReason, "lacks a valid signature") {
		t.Fatalf("right: state %s, reason %q, attempts %+v\nagent:\n%s", right.State, right.FailureReason, right.Attempts, three.log.String())
	}
	if valid(threeNix, basePath) {
		t.Fatal("base is in the store of the agent whose daemon does not trust the coordinator's key")
	}
}

// addUntrustedAgent starts, in nixDir's namespace, nix-daemon as root on
// its socket (trusting only key) and gbc agent as user nobody on that
// socket.
func (f *farm) addUntrustedAgent(nixDir, name, key string, extra ...string) agentProc {
	t := f.t
	t.Helper()
	startSocketDaemon(t, nixDir, name, "require-sigs = true\ntrusted-users = root\ntrusted-public-keys = "+key)

	// Everything the agent reads or writes, where nobody may.
	home, err := os.MkdirTemp("", "gbc-e2e-untrusted-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	k := newKey(t, f.dir, name)
	id := f.mustSSH(fmt.Sprintf("agent new --name %s --key '%s'", name, k.Pub))
	bin := filepath.Join(home, "gbc")
	ident := filepath.Join(home, "id")
	hosts := filepath.Join(home, "known_hosts")
	work := filepath.Join(home, "work")
	for _, c := range []struct{ from, to string }{{gbcBin, bin}, {k.Path, ident}, {f.knownHosts, hosts}} {
		if err := copyFile(c.from, c.to); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{bin, hosts} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{ident, work} {
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	args := append([]string{"--reuid=" + nobody, "--regid=" + nobody, "--clear-groups", bin,
		"agent", "--coordinator", f.addr, "--identity", ident, "--known-hosts", hosts,
		"--backend", "nix", "--name", name, "--work-dir", work,
		"--daemon", "unix:/nix/var/nix/daemon-socket/socket"}, extra...)
	n, a := nsCmd(nixDir, "setpriv", args...)
	return agentProc{ID: id, Key: k, proc: start(t, n, a...)}
}

// startSocketDaemon starts nix-daemon as root in nixDir's namespace,
// listening on its socket (/nix/var/nix/daemon-socket/socket there), with
// extra nix.conf lines, and waits for the socket.
func startSocketDaemon(t *testing.T, nixDir, name, extraConf string) {
	t.Helper()
	n, a := nsCmd(nixDir, "nix-daemon")
	daemon := exec.Command(n, a...)
	daemon.Env = append(os.Environ(), "NIX_CONFIG=build-users-group =\nsubstituters =\nsandbox = false\n"+extraConf)
	dlog := &logFile{}
	daemon.Stdout, daemon.Stderr = dlog, dlog
	if err := daemon.Start(); err != nil {
		t.Fatalf("nix-daemon: %v", err)
	}
	t.Cleanup(func() {
		_ = daemon.Process.Kill()
		_ = daemon.Wait()
		if t.Failed() {
			t.Logf("nix-daemon of %s:\n%s", name, dlog.String())
		}
	})
	socket := filepath.Join(nixDir, "var", "nix", "daemon-socket", "socket")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nix-daemon made no socket at %s:\n%s", socket, dlog.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
