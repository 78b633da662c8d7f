package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/narinfo"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
)

// A farm with a /gnu/store layout: Guix cannot be installed here, but Nix
// builds /gnu/store derivations when its store, state and log directories
// move there. Each process below runs in a mount namespace where a
// directory of the test is bind-mounted on /gnu (created empty on the host
// if missing), so every one has its own empty /gnu/store and database.

// gnuScript mounts $0 on /gnu, points Nix there and runs the rest.
const gnuScript = `mount --bind "$0" /gnu && export NIX_STORE_DIR=/gnu/store NIX_STATE_DIR=/gnu/var/nix ` +
	`NIX_LOG_DIR=/gnu/var/log/nix XDG_CACHE_HOME="$0/xdg-cache" && exec "$@"`

// requireGnuNamespaces skips unless this process may bind-mount on /gnu.
func requireGnuNamespaces(t *testing.T) {
	t.Helper()
	requireNamespaces(t)
	if err := os.MkdirAll("/gnu", 0o755); err != nil {
		t.Skipf("no /gnu mount point: %v", err)
	}
}

// gnuCmd is name args… in a namespace whose /gnu is gnuDir.
func gnuCmd(gnuDir, name string, args ...string) (string, []string) {
	return "unshare", append([]string{"-m", "--propagation", "private", "sh", "-c", gnuScript, gnuDir, name}, args...)
}

func gnuRun(t *testing.T, gnuDir, name string, args ...string) string {
	t.Helper()
	n, a := gnuCmd(gnuDir, name, args...)
	cmd := exec.Command(n, a...)
	cmd.Env = nixEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s (/gnu is %s): %v\n%s", name, strings.Join(args, " "), gnuDir, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

func gnuValid(gnuDir, path string) bool {
	n, a := gnuCmd(gnuDir, "nix-store", "--check-validity", path)
	cmd := exec.Command(n, a...)
	cmd.Env = nixEnv()
	return cmd.Run() == nil
}

func gnuNarHash(t *testing.T, gnuDir, path string) nixhash.Hash {
	t.Helper()
	h, err := nixhash.Parse("sha256:" + gnuRun(t, gnuDir, "nix-hash", "--type", "sha256", "--base32", path))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// gnuAgentArgs are the flags a /gnu/store agent runs with here.
var gnuAgentArgs = []string{"--store-dir", "/gnu/store", "--daemon", "exec:nix-daemon --stdio"}

// TestGnuStoreFarm: a coordinator with --store-dir /gnu/store whose store
// holds only the .drv files, two agents with empty /gnu/stores; agent one
// builds a and b, agent two builds c from a and b substituted through the
// coordinator. Every narinfo carries a Guix Signature: that
// narinfo.VerifyGuix accepts with the coordinator's Guix key (and refuses
// with another), beside a Nix Sig:.
func TestGnuStoreFarm(t *testing.T) {
	requireGnuNamespaces(t)
	dirs := mkdirs(t, "coord", "one", "two")
	coordGnu, oneGnu, twoGnu := dirs[0], dirs[1], dirs[2]

	nonce := fmt.Sprint(time.Now().UnixNano())
	drv := map[string]string{}
	for _, attr := range []string{"a", "b", "c"} {
		drv[attr] = gnuRun(t, coordGnu, "nix-instantiate", "testdata/chain.nix", "--argstr", "nonce", nonce, "-A", attr)
		if !strings.HasPrefix(drv[attr], "/gnu/store/") {
			t.Fatalf("%s instantiated as %s, not in /gnu/store", attr, drv[attr])
		}
	}

	f := &farm{t: t, dir: t.TempDir()}
	f.state = filepath.Join(f.dir, "state")
	f.admin = newKey(t, f.dir, "admin")
	n, a := gnuCmd(coordGnu, gbcBin, "coordinator", "--state-dir", f.state, "--listen", "127.0.0.1:0",
		"--admin-key", f.admin.Path+".pub", "--store-dir", "/gnu/store")
	f.coord = start(t, n, a...)
	m := f.coord.log.waitFor(t, addrRE, 30*time.Second)
	f.addr, f.port = m[1], m[2]
	hostPub, err := os.ReadFile(filepath.Join(f.state, "ssh_host_ed25519_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	f.knownHosts = filepath.Join(f.dir, "known_hosts")
	if err := os.WriteFile(f.knownHosts, []byte(fmt.Sprintf("[127.0.0.1]:%s %s\n", f.port, strings.TrimSpace(string(hostPub)))), 0o644); err != nil {
		t.Fatal(err)
	}
	addGnuAgent := func(gnuDir, name string, extra ...string) agentProc {
		key := newKey(t, f.dir, name)
		id := f.mustSSH(fmt.Sprintf("agent new --name %s --key '%s'", name, key.Pub))
		args := append([]string{"agent", "--coordinator", f.addr, "--identity", key.Path,
			"--known-hosts", f.knownHosts, "--backend", "nix", "--name", name,
			"--work-dir", filepath.Join(f.dir, name+"-work")}, append(gnuAgentArgs, extra...)...)
		n, a := gnuCmd(gnuDir, gbcBin, args...)
		return agentProc{ID: id, Key: key, proc: start(t, n, a...)}
	}
	one := addGnuAgent(oneGnu, "gnu-one", "--require-tag", "lane=one")
	two := addGnuAgent(twoGnu, "gnu-two", "--require-tag", "lane=two")

	r := f.ssh(f.admin, "build --wait --tag lane=one "+drv["a"]+" "+drv["b"])
	if r.Code != 0 {
		t.Fatalf("build a b: exit %d\n%s\n%s\nagent one:\n%s", r.Code, r.Stdout, r.Stderr, one.log.String())
	}
	ab := lines(r.Stdout)
	r = f.ssh(f.admin, "build --wait --tag lane=two "+drv["c"])
	if r.Code != 0 {
		t.Fatalf("build c: exit %d\n%s\n%s\nagent two:\n%s", r.Code, r.Stdout, r.Stderr, two.log.String())
	}
	want := map[string]struct{ id, agent, gnu string }{
		"a": {ab[0], one.ID, oneGnu}, "b": {ab[1], one.ID, oneGnu}, "c": {lines(r.Stdout)[0], two.ID, twoGnu},
	}
	out := map[string]string{}
	for attr, w := range want {
		b := f.show(w.id)
		if b.State != "succeeded" || b.Agent != w.agent || len(b.Outputs) != 1 {
			t.Fatalf("%s: %s on %s with %d outputs, want succeeded on %s", attr, b.State, b.Agent, len(b.Outputs), w.agent)
		}
		o := b.Outputs[0]
		if !strings.HasPrefix(o.Path, "/gnu/store/") {
			t.Fatalf("%s: output %s is not in /gnu/store", attr, o.Path)
		}
		out[attr] = o.Path
		reported, err := nixhash.Parse(o.NarHash)
		if err != nil {
			t.Fatal(err)
		}
		if got := gnuNarHash(t, w.gnu, o.Path); !got.Equal(reported) {
			t.Fatalf("%s: NarHash %s reported, %s in the agent's store", attr, reported, got)
		}
	}
	// Agent two substituted a and b through the coordinator (it was never
	// given them to build) and holds the bytes agent one built.
	for _, attr := range []string{"a", "b"} {
		if !gnuValid(twoGnu, out[attr]) {
			t.Fatalf("%s's output is not in agent two's store", attr)
		}
		if h1, h2 := gnuNarHash(t, oneGnu, out[attr]), gnuNarHash(t, twoGnu, out[attr]); !h1.Equal(h2) {
			t.Fatalf("%s differs between the agents: %s vs %s", attr, h1, h2)
		}
	}
	if gnuValid(oneGnu, out["c"]) {
		t.Fatal("c's output is in agent one's store")
	}
	if got := gnuRun(t, twoGnu, "cat", out["c"]+"/c.txt"); !strings.Contains(got, "a ("+nonce+")") {
		t.Fatalf("c.txt: %q", got)
	}
	ents, err := os.ReadDir(filepath.Join(coordGnu, "store"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") && !strings.HasSuffix(e.Name(), ".drv") {
			t.Fatalf("the coordinator's store holds %s", e.Name())
		}
	}

	// The cache's narinfos: Guix Signature: from the coordinator's Guix
	// key, Nix Sig: from its Nix key.
	guixPub, err := os.ReadFile(filepath.Join(f.state, "guix-signing-key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	gk, err := signing.ParseGuixPublicKey(guixPub)
	if err != nil {
		t.Fatalf("guix-signing-key.pub: %v", err)
	}
	nixPub, err := os.ReadFile(filepath.Join(f.state, "signing-key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	nk, err := signing.ParseNixPublicKey(strings.TrimSpace(string(nixPub)))
	if err != nil {
		t.Fatal(err)
	}
	other, err := signing.GenerateGuixKey()
	if err != nil {
		t.Fatal(err)
	}
	for attr, p := range out {
		raw, err := os.ReadFile(filepath.Join(f.state, "cache", filepath.Base(p)[:32]+".narinfo"))
		if err != nil {
			t.Fatalf("%s: narinfo: %v", attr, err)
		}
		if !strings.Contains(string(raw), "\nSignature: 1;") {
			t.Fatalf("%s: narinfo has no Guix Signature: line:\n%s", attr, raw)
		}
		if err := narinfo.VerifyGuix(raw, signing.NewACL(gk)); err != nil {
			t.Fatalf("%s: VerifyGuix with the coordinator's key: %v\n%s", attr, err, raw)
		}
		if err := narinfo.VerifyGuix(raw, signing.NewACL(other.Public())); err == nil {
			t.Fatalf("%s: VerifyGuix accepted another key", attr)
		}
		ni, err := narinfo.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if ni.StorePath != p {
			t.Fatalf("%s: narinfo for %s, want %s", attr, ni.StorePath, p)
		}
		if err := ni.VerifyNix([]signing.NixPublicKey{nk}); err != nil {
			t.Fatalf("%s: VerifyNix: %v", attr, err)
		}
	}
}
