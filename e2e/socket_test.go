package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSocketDaemonFarm: an agent (root, so a trusted client) builds
// through a real nix-daemon listening on its Unix socket, as a deployed
// agent does (gbc agent --daemon unix:PATH), in its own store: the
// diamond builds, inputs substituted from the coordinator's cache, each
// output with the NarHash Nix computes for it there; and canceling a
// build ends its builder, because closing the agent's socket connection
// makes the daemon's worker for it stop.
func TestSocketDaemonFarm(t *testing.T) {
	t.Parallel()
	requireNamespaces(t)
	dirs := mkdirs(t, "coord", "agent")
	coordNix, agentNix := dirs[0], dirs[1]
	nonce := fmt.Sprint(time.Now().UnixNano())
	drv := map[string]string{}
	for _, attr := range []string{"base", "left", "right", "top"} {
		drv[attr] = nsRun(t, coordNix, "nix-instantiate", "../examples/graph.nix", "--argstr", "nonce", nonce, "-A", attr)
	}
	gate := t.TempDir()
	pids, release := filepath.Join(gate, "pids"), filepath.Join(gate, "release")
	script := fmt.Sprintf("echo $$ >> %s; while [ ! -e %s ]; do /bin/sleep 0.1; done; echo ok > $out", pids, release)
	gatedNix := filepath.Join(gate, "gated.nix")
	if err := os.WriteFile(gatedNix, []byte(fmt.Sprintf(`derivation { name = "gbc-gated"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" %q ]; nonce = %q; }`, script, nonce)), 0o644); err != nil {
		t.Fatal(err)
	}
	gated := nsRun(t, coordNix, "nix-instantiate", gatedNix)
	t.Cleanup(func() { os.WriteFile(release, nil, 0o644) }) // whatever happens, the builder ends

	f, _ := newNSFarm(t, coordNix)
	startSocketDaemon(t, agentNix, "socket-agent", "")
	key := newKey(t, f.dir, "socket-agent")
	id := f.mustSSH(fmt.Sprintf("agent new --name socket-agent --key '%s'", key.Pub))
	n, a := nsCmd(agentNix, gbcBin, "agent", "--coordinator", f.addr, "--identity", key.Path,
		"--known-hosts", f.knownHosts, "--backend", "nix", "--daemon", "unix:/nix/var/nix/daemon-socket/socket",
		"--name", "socket-agent", "--max-parallel-builds", "2", "--work-dir", filepath.Join(f.dir, "socket-agent-work"))
	agent := start(t, n, a...)

	r := f.ssh(f.admin, "build --wait "+drv["base"]+" "+drv["left"]+" "+drv["right"]+" "+drv["top"])
	if r.Code != 0 {
		t.Fatalf("diamond: exit %d\n%s\n%s\nagent:\n%s", r.Code, r.Stdout, r.Stderr, agent.log.String())
	}
	// Only the daemon writes the agent's store: what is valid there came
	// through the socket.
	for _, bid := range lines(r.Stdout)[:4] {
		b := f.show(bid)
		if b.State != "succeeded" || b.Agent != id {
			t.Fatalf("build %s: %s on %s", bid, b.State, b.Agent)
		}
		for _, o := range b.Outputs {
			if got := narHashIn(t, agentNix, o.Path); got.String() != o.NarHash {
				t.Fatalf("%s: NarHash %s in the agent's store, %s in the cache", o.Path, got, o.NarHash)
			}
		}
	}

	gid := f.mustSSH("build " + gated)
	deadline := time.Now().Add(time.Minute)
	var pid int
	for {
		b, _ := os.ReadFile(pids)
		if _, err := fmt.Sscan(string(b), &pid); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gated builder never started:\n%s", agent.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.mustSSH("build cancel " + gid)
	waitDead(t, pid, 30*time.Second, "the canceled build's builder on the socket daemon")
	if b := f.show(gid); b.State != "canceled" {
		t.Fatalf("gated build after cancel: %s", b.State)
	}
}
