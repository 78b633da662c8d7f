package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
)

// Stores of their own: each process below runs in a private mount
// namespace where a directory of the test is bind-mounted on /nix, so the
// coordinator, every agent and every client has its own store and Nix
// database (and its own narinfo disk cache, via XDG_CACHE_HOME).

// nsScript mounts $0 on /nix and runs the rest of the arguments.
const nsScript = `mount --bind "$0" /nix && export XDG_CACHE_HOME="$0/xdg-cache" && exec "$@"`

// requireNamespaces skips unless this process may create mount namespaces.
func requireNamespaces(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount namespaces and bind mounts")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not found (util-linux)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", nsScript, dir, "true").CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount a store in a mount namespace: %v: %s", err, out)
	}
}

// nsCmd is name args… in a namespace whose /nix is nixDir.
func nsCmd(nixDir, name string, args ...string) (string, []string) {
	return "unshare", append([]string{"-m", "--propagation", "private", "sh", "-c", nsScript, nixDir, name}, args...)
}

// nsRun runs a command in nixDir's namespace and returns stdout; it fails
// the test on a non-zero exit.
func nsRun(t *testing.T, nixDir, name string, args ...string) string {
	t.Helper()
	out, stderr, err := nsTry(nixDir, name, args...)
	if err != nil {
		t.Fatalf("%s %s (store %s): %v\n%s", name, strings.Join(args, " "), nixDir, err, stderr)
	}
	return strings.TrimSpace(out)
}

func nsTry(nixDir, name string, args ...string) (string, string, error) {
	n, a := nsCmd(nixDir, name, args...)
	cmd := exec.Command(n, a...)
	cmd.Env = nixEnv()
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	return out.String(), stderr.String(), err
}

var httpRE = regexp.MustCompile(`cache listening" http=(127\.0\.0\.1:\d+)`)

// newNSFarm is newFarm with the coordinator in nixDir's namespace (extra
// coordinator flags appended); it also serves the cache on --http-listen
// and returns that address.
func newNSFarm(t *testing.T, nixDir string, extra ...string) (*farm, string) {
	t.Helper()
	f := &farm{t: t, dir: t.TempDir()}
	f.state = filepath.Join(f.dir, "state")
	f.admin = newKey(t, f.dir, "admin")
	name, args := nsCmd(nixDir, gbcBin, append([]string{"coordinator", "--state-dir", f.state, "--listen", "127.0.0.1:0",
		"--admin-key", f.admin.Path + ".pub", "--http-listen", "127.0.0.1:0"}, extra...)...)
	f.coord = start(t, name, args...)
	m := f.coord.log.waitFor(t, addrRE, 30*time.Second)
	f.addr, f.port = m[1], m[2]
	httpAddr := f.coord.log.waitFor(t, httpRE, 5*time.Second)[1]
	hostPub, err := os.ReadFile(filepath.Join(f.state, "ssh_host_ed25519_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	f.knownHosts = filepath.Join(f.dir, "known_hosts")
	line := fmt.Sprintf("[127.0.0.1]:%s %s\n", f.port, strings.TrimSpace(string(hostPub)))
	if err := os.WriteFile(f.knownHosts, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	return f, httpAddr
}

// addNSAgent registers an agent and runs it in nixDir's namespace.
func (f *farm) addNSAgent(nixDir, name string, extra ...string) agentProc {
	f.t.Helper()
	key := newKey(f.t, f.dir, name)
	id := f.mustSSH(fmt.Sprintf("agent new --name %s --key '%s'", name, key.Pub))
	args := append([]string{"agent", "--coordinator", f.addr, "--identity", key.Path,
		"--known-hosts", f.knownHosts, "--backend", "nix", "--daemon", "exec:nix-daemon --stdio", "--name", name,
		"--work-dir", filepath.Join(f.dir, name+"-work")}, extra...)
	n, a := nsCmd(nixDir, gbcBin, args...)
	return agentProc{ID: id, Key: key, proc: start(f.t, n, a...)}
}

// narHashIn is the sha256 of nix-store --dump of path in nixDir's store.
func narHashIn(t *testing.T, nixDir, path string) nixhash.Hash {
	t.Helper()
	n, a := nsCmd(nixDir, "nix-store", "--dump", path)
	cmd := exec.Command(n, a...)
	cmd.Env = nixEnv()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-store --dump %s in %s: %v", path, nixDir, err)
	}
	sum := sha256.Sum256(out)
	return nixhash.NewSHA256(sum)
}

func valid(nixDir, path string) bool {
	_, _, err := nsTry(nixDir, "nix-store", "--check-validity", path)
	return err == nil
}

func mkdirs(t *testing.T, names ...string) []string {
	t.Helper()
	base := t.TempDir()
	var out []string
	for _, n := range names {
		d := filepath.Join(base, n)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// TestChainAcrossStores: the coordinator's store holds only the .drv
// files; agent one builds a and b, agent two builds c and must substitute
// b (and a) from the coordinator's cache through its SSH connection. Then
// empty stores substitute c's closure over --http-listen with signatures
// required: the coordinator's key works, a tampered narinfo or another key
// does not.
func TestChainAcrossStores(t *testing.T) {
	requireNamespaces(t)
	dirs := mkdirs(t, "coord", "one", "two", "client", "tampered", "otherkey")
	coordNix, oneNix, twoNix := dirs[0], dirs[1], dirs[2]

	nonce := fmt.Sprint(time.Now().UnixNano())
	drv := map[string]string{}
	for _, attr := range []string{"a", "b", "c"} {
		drv[attr] = nsRun(t, coordNix, "nix-instantiate", "testdata/chain.nix", "--argstr", "nonce", nonce, "-A", attr)
	}
	f, httpAddr := newNSFarm(t, coordNix)
	one := f.addNSAgent(oneNix, "agent-one", "--require-tag", "lane=one")
	two := f.addNSAgent(twoNix, "agent-two", "--require-tag", "lane=two")

	ab := lines(f.mustSSH("build --tag lane=one " + drv["a"] + " " + drv["b"]))
	r := f.ssh(f.admin, "build --wait --tag lane=two "+drv["c"])
	if r.Code != 0 {
		t.Fatalf("build c: exit %d\n%s\n%s\nagent two:\n%s", r.Code, r.Stdout, r.Stderr, two.log.String())
	}
	cID := lines(r.Stdout)[0]
	want := map[string]struct{ id, agent, nix string }{
		"a": {ab[0], one.ID, oneNix}, "b": {ab[1], one.ID, oneNix}, "c": {cID, two.ID, twoNix},
	}
	out := map[string]string{}
	for attr, w := range want {
		var b buildJSON
		deadline := time.Now().Add(time.Minute)
		for b = f.show(w.id); b.State != "succeeded" && time.Now().Before(deadline); b = f.show(w.id) {
			time.Sleep(100 * time.Millisecond)
		}
		if b.State != "succeeded" || b.Agent != w.agent {
			t.Fatalf("%s: %s on %s, want succeeded on %s", attr, b.State, b.Agent, w.agent)
		}
		o := b.Outputs[0]
		out[attr] = o.Path
		reported, err := nixhash.Parse(o.NarHash)
		if err != nil {
			t.Fatal(err)
		}
		if got := narHashIn(t, w.nix, o.Path); !got.Equal(reported) {
			t.Fatalf("%s: NarHash %s reported, nix-store --dump in the agent's store gives %s", attr, reported, got)
		}
	}
	// Agent two substituted b and a instead of building them, and holds
	// the same bytes as agent one.
	for _, attr := range []string{"a", "b"} {
		if !valid(twoNix, out[attr]) {
			t.Fatalf("%s's output is not in agent two's store", attr)
		}
		if h1, h2 := narHashIn(t, oneNix, out[attr]), narHashIn(t, twoNix, out[attr]); !h1.Equal(h2) {
			t.Fatalf("%s differs between the agents: %s vs %s", attr, h1, h2)
		}
	}
	if valid(oneNix, out["c"]) {
		t.Fatal("c's output is in agent one's store")
	}
	if !strings.Contains(two.log.String(), "inputs substituted") {
		t.Fatalf("agent two did not log its substitution:\n%s", two.log.String())
	}
	// The coordinator's own store still holds nothing but derivations.
	ents, err := os.ReadDir(filepath.Join(coordNix, "store"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") && !strings.HasSuffix(e.Name(), ".drv") {
			t.Fatalf("coordinator store holds %s", e.Name())
		}
	}

	// Third parties: a real nix-store --realise from --http-listen.
	pub, err := os.ReadFile(filepath.Join(f.state, "signing-key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	substitute := func(nixDir, key string) (string, error) {
		_, stderr, err := nsTry(nixDir, "nix-store", "--realise", out["c"],
			"--option", "substituters", "http://"+httpAddr,
			"--option", "trusted-public-keys", key,
			"--option", "require-sigs", "true",
			"--option", "narinfo-cache-negative-ttl", "0")
		return stderr, err
	}
	if stderr, err := substitute(dirs[3], strings.TrimSpace(string(pub))); err != nil {
		t.Fatalf("substituting c from the cache: %v\n%s", err, stderr)
	}
	got := nsRun(t, dirs[3], "cat", out["c"]+"/c.txt")
	if !strings.Contains(got, "a ("+nonce+")") || !valid(dirs[3], out["a"]) || !valid(dirs[3], out["b"]) {
		t.Fatalf("substituted closure of c: c.txt %q", got)
	}

	// A narinfo whose signed fields were changed is refused.
	cHash := filepath.Base(out["c"])[:32]
	niPath := filepath.Join(f.state, "cache", cHash+".narinfo")
	orig, err := os.ReadFile(niPath)
	if err != nil {
		t.Fatal(err)
	}
	tampered := regexp.MustCompile(`(?m)^NarSize: (\d+)$`).ReplaceAllStringFunc(string(orig), func(l string) string {
		return l + "0"
	})
	if tampered == string(orig) {
		t.Fatal("no NarSize line to tamper with")
	}
	if err := os.WriteFile(niPath, []byte(tampered), 0o644); err != nil {
		t.Fatal(err)
	}
	const unsigned = "is not signed by any of the keys"
	if stderr, err := substitute(dirs[4], strings.TrimSpace(string(pub))); err == nil || valid(dirs[4], out["c"]) || !strings.Contains(stderr, unsigned) {
		t.Fatalf("tampered narinfo was not refused for its signature (err %v)\n%s", err, stderr)
	}
	if err := os.WriteFile(niPath, orig, 0o644); err != nil {
		t.Fatal(err)
	}

	// Another key: nothing is trusted.
	other, err := signing.GenerateNixKey("someone-else-1")
	if err != nil {
		t.Fatal(err)
	}
	if stderr, err := substitute(dirs[5], other.Public().String()); err == nil || valid(dirs[5], out["c"]) || !strings.Contains(stderr, unsigned) {
		t.Fatalf("narinfo signed by the coordinator was not refused with another key (err %v)\n%s", err, stderr)
	}
}

// TestSubmitFromAnotherStore: an operator whose store is the only one with
// the derivations runs gbc submit; the coordinator's store stays empty
// (the closure arrives as a nix-store --export stream through the import
// command) and an agent with an empty store fetches everything through its
// SSH connection.
func TestSubmitFromAnotherStore(t *testing.T) {
	requireNamespaces(t)
	dirs := mkdirs(t, "coord", "agent", "operator")
	coordNix, agentNix, opNix := dirs[0], dirs[1], dirs[2]
	nonce := fmt.Sprint(time.Now().UnixNano())
	var drvs []string
	for _, attr := range []string{"base", "left", "right", "top"} {
		drvs = append(drvs, nsRun(t, opNix, "nix-instantiate", "../examples/graph.nix", "--argstr", "nonce", nonce, "-A", attr))
	}
	f, _ := newNSFarm(t, coordNix)
	ag := f.addNSAgent(agentNix, "agent-empty")

	out, stderr, err := nsTry(opNix, gbcBin, append([]string{"submit", "--coordinator", f.addr, "--identity", f.admin.Path,
		"--known-hosts", f.knownHosts, "--wait"}, drvs...)...)
	if err != nil {
		t.Fatalf("gbc submit: %v\n%s\n%s\nagent:\n%s", err, out, stderr, ag.log.String())
	}
	if n := strings.Count(out, " succeeded "); n != len(drvs) {
		t.Fatalf("gbc submit printed %d successes, want %d:\n%s", n, len(drvs), out)
	}
	ids := lines(out)[:len(drvs)]
	top := f.show(ids[3])
	if got := narHashIn(t, agentNix, top.Outputs[0].Path); got.String() != top.Outputs[0].NarHash {
		t.Fatalf("top: NarHash %s reported, %s in the agent's store", top.Outputs[0].NarHash, got)
	}
	if ents, _ := os.ReadDir(filepath.Join(coordNix, "store")); len(ents) != 0 {
		t.Fatalf("the coordinator's store holds %d entries, want none", len(ents))
	}
	// A stream that is not an export (here: empty) is refused, saying where.
	if r := f.ssh(f.admin, "import"); r.Code != 1 || !strings.Contains(r.Stderr, "offset 0") {
		t.Fatalf("empty import: exit %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
}
