package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gcFlags: a master build is kept for ever, any other tag for 1 ms; no
// default age and no access window, so only rules, pins and closures keep.
var gcFlags = []string{"--cache-keep", "branch=master:forever", "--cache-keep", "branch=*:1ms",
	"--cache-keep-default", "0", "--cache-keep-accessed", "0"}

type gcReport struct {
	Paths   int `json:"paths"`
	Kept    int `json:"kept"`
	Deleted int `json:"deleted"`
	Orphans int `json:"orphans_deleted"`
	Delete  []struct {
		Path string `json:"path"`
	} `json:"delete"`
}

func (f *farm) gc(args string) gcReport {
	f.t.Helper()
	var r gcReport
	out := f.mustSSH("cache gc --json " + args)
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		f.t.Fatalf("cache gc --json: %v\n%s", err, out)
	}
	return r
}

func (f *farm) waitSucceeded(id string) buildJSON {
	f.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	b := f.show(id)
	for ; b.State != "succeeded" && time.Now().Before(deadline); b = f.show(id) {
		if b.State == "failed" || b.State == "canceled" || b.State == "failed-dependency" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b.State != "succeeded" {
		f.t.Fatalf("build %s is %s", id, b.State)
	}
	return b
}

// narinfoStatus is the HTTP status of a path's narinfo on --http-listen.
func narinfoStatus(t *testing.T, httpAddr, path string) int {
	t.Helper()
	res, err := http.Get("http://" + httpAddr + "/" + filepath.Base(path)[:32] + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// consistent checks the cache directory: every narinfo's NAR is there,
// and (when noOrphans) every NAR is named by a narinfo.
func consistent(t *testing.T, cacheDir string, noOrphans bool) int {
	t.Helper()
	infos, _ := filepath.Glob(filepath.Join(cacheDir, "*.narinfo"))
	named := map[string]bool{}
	for _, p := range infos {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if u, ok := strings.CutPrefix(l, "URL: "); ok {
				named[u] = true
				if _, err := os.Stat(filepath.Join(cacheDir, u)); err != nil {
					t.Errorf("narinfo %s without its NAR %s: %v", filepath.Base(p), u, err)
				}
			}
		}
	}
	if noOrphans {
		ents, _ := os.ReadDir(filepath.Join(cacheDir, "nar"))
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".tmp") && !named["nar/"+e.Name()] {
				t.Errorf("orphan NAR %s", e.Name())
			}
		}
	}
	return len(infos)
}

// TestCacheGC: a real farm publishes a chain whose top is kept by a rule
// (its inputs, built under a tag that expired, stay), an expired build's
// output, a pinned one; cache gc --dry-run says what goes and cache why
// why the rest stays; after cache gc a real nix-store --realise with
// require-sigs substitutes every kept path and its closure from an
// empty store, the deleted paths are 404 and cannot be substituted, and
// builds published while collections run lose nothing. Then agent
// archive cuts the agent off, and builds prune removes what the cache
// does not keep.
func TestCacheGC(t *testing.T) {
	requireNamespaces(t)
	dirs := mkdirs(t, "coord", "agent", "client", "client2")
	coordNix, agentNix := dirs[0], dirs[1]
	nonce := fmt.Sprint(time.Now().UnixNano())
	inst := func(file, attr, n string) string {
		return nsRun(t, coordNix, "nix-instantiate", file, "--argstr", "nonce", n, "-A", attr)
	}
	chain := map[string]string{}
	for _, attr := range []string{"a", "b", "c"} {
		chain[attr] = inst("testdata/chain.nix", attr, nonce)
	}
	old, pinned := inst("testdata/chain.nix", "a", nonce+"-old"), inst("testdata/chain.nix", "a", nonce+"-pinned")
	f, httpAddr := newNSFarm(t, coordNix, gcFlags...)
	ag := f.addNSAgent(agentNix, "gc-agent")

	ab := lines(f.mustSSH("build --tag branch=feature " + chain["a"] + " " + chain["b"]))
	oldID := lines(f.mustSSH("build --tag branch=feature " + old))[0]
	pinID := lines(f.mustSSH("build --tag branch=feature " + pinned))[0]
	cID := lines(f.mustSSH("build --tag branch=master " + chain["c"]))[0]
	out := map[string]string{}
	for name, id := range map[string]string{"a": ab[0], "b": ab[1], "c": cID, "old": oldID, "pinned": pinID} {
		out[name] = f.waitSucceeded(id).Outputs[0].Path
	}
	f.mustSSH("cache pin --reason 'release 1' " + out["pinned"])
	if pins := f.mustSSH("cache pins"); !strings.Contains(pins, out["pinned"]) || !strings.Contains(pins, "release 1") {
		t.Fatalf("cache pins:\n%s", pins)
	}

	dry := f.gc("--dry-run")
	var planned []string
	for _, d := range dry.Delete {
		planned = append(planned, d.Path)
	}
	slices.Sort(planned)
	want := []string{out["old"], old}
	slices.Sort(want)
	if !slices.Equal(planned, want) {
		t.Fatalf("dry run deletes %v, want the old output and its .drv %v", planned, want)
	}
	why := f.mustSSH("cache why " + out["a"] + " " + out["pinned"] + " " + out["old"])
	for _, w := range []string{"referenced by " + filepath.Base(out["b"]), "branch=master:forever", "pinned: release 1", "this collection deletes it"} {
		if !strings.Contains(why, w) {
			t.Errorf("cache why lacks %q:\n%s", w, why)
		}
	}
	if narinfoStatus(t, httpAddr, out["old"]) != 200 {
		t.Fatal("the dry run deleted")
	}

	// Collections race with a build being published: nothing it needs goes.
	raced := inst("testdata/chain.nix", "a", nonce+"-raced")
	racedID := lines(f.mustSSH("build --tag branch=master " + raced))[0]
	deleted := 0
	for i := 0; i < 20; i++ {
		deleted += f.gc("").Deleted
		if f.show(racedID).State == "succeeded" {
			break
		}
	}
	racedOut := f.waitSucceeded(racedID).Outputs[0].Path
	deleted += f.gc("").Deleted
	if deleted != 2 {
		t.Errorf("collections deleted %d paths, want 2", deleted)
	}
	consistent(t, filepath.Join(f.state, "cache"), true)
	if text := f.mustSSH("cache gc --dry-run"); !regexp.MustCompile(`^would delete 0 of \d+ paths \(0B\); kept \d+ \(`).MatchString(text) {
		t.Errorf("cache gc --dry-run after the collections:\n%s", text)
	}

	pub, err := os.ReadFile(filepath.Join(f.state, "signing-key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	substitute := func(nixDir, path string) (string, error) {
		_, stderr, err := nsTry(nixDir, "nix-store", "--realise", path,
			"--option", "substituters", "http://"+httpAddr,
			"--option", "trusted-public-keys", strings.TrimSpace(string(pub)),
			"--option", "require-sigs", "true",
			"--option", "narinfo-cache-negative-ttl", "0")
		return stderr, err
	}
	for _, p := range []string{out["c"], out["pinned"], racedOut} {
		if stderr, err := substitute(dirs[2], p); err != nil {
			t.Fatalf("substituting kept %s after gc: %v\n%s", p, err, stderr)
		}
	}
	for _, p := range []string{out["a"], out["b"], out["c"], out["pinned"], racedOut} {
		if !valid(dirs[2], p) {
			t.Errorf("%s not substituted", p)
		}
	}
	for _, p := range []string{out["old"], old} {
		if s := narinfoStatus(t, httpAddr, p); s != 404 {
			t.Errorf("deleted %s: HTTP %d, want 404", p, s)
		}
	}
	if _, err := substitute(dirs[3], out["old"]); err == nil || valid(dirs[3], out["old"]) {
		t.Errorf("a deleted path was substituted")
	}
	events := f.mustSSH("events --type cache-deleted")
	if !strings.Contains(events, out["old"]) || !strings.Contains(events, old) {
		t.Errorf("cache-deleted events:\n%s", events)
	}

	// builds prune: the old build (expired, output gone) and the chain's
	// a and b (their tag expired) go; c (rule), the pinned one and the
	// raced one (rule) stay.
	tomorrow := time.Now().Add(24 * time.Hour).UTC().Format(time.DateOnly)
	pruned := lines(f.mustSSH("builds prune --finished-before " + tomorrow))
	slices.Sort(pruned)
	wantPruned := []string{oldID, ab[0], ab[1]}
	slices.Sort(wantPruned)
	if !slices.Equal(pruned, wantPruned) {
		t.Errorf("pruned %v, want %v", pruned, wantPruned)
	}
	if r := f.ssh(f.admin, "build show "+oldID); r.Code == 0 {
		t.Errorf("pruned build still shown")
	}
	f.show(cID)

	// agent archive: its connection closes at once, its key is refused,
	// it is hidden from agents but its builds still name it.
	if r := f.ssh(f.admin, "agent "+ag.ID+" delete"); r.Code == 0 || !strings.Contains(r.Stderr, "archive it instead") {
		t.Errorf("delete of an agent with builds: exit %d %s", r.Code, r.Stderr)
	}
	f.mustSSH("agent " + ag.ID + " archive")
	f.coord.log.waitFor(t, regexp.MustCompile(`connections of a revoked key closed[^\n]*reason="agent archived"`), 10*time.Second)
	ag.log.waitFor(t, regexp.MustCompile(`disconnected from coordinator; retrying`), 30*time.Second)
	if strings.Contains(f.mustSSH("agents"), ag.ID) || !strings.Contains(f.mustSSH("agents --all"), ag.ID) {
		t.Errorf("archived agent listed:\n%s\n%s", f.mustSSH("agents"), f.mustSSH("agents --all"))
	}
	if b := f.show(cID); b.Agent != ag.ID {
		t.Errorf("build of the archived agent names %q", b.Agent)
	}
	spare := f.mustSSH("agent new --name spare")
	f.mustSSH("agent " + spare + " delete")
	if strings.Contains(f.mustSSH("agents --all"), spare) {
		t.Errorf("deleted agent still listed")
	}
}

// TestCacheGCKilled: kill -9 of the coordinator while cache gc deletes
// leaves no narinfo without its NAR; after a restart the next collection
// finishes the job and reaps the orphan NARs.
func TestCacheGCKilled(t *testing.T) {
	requireNamespaces(t)
	dirs := mkdirs(t, "coord")
	coordNix := dirs[0]
	// 1,500 small paths, imported: no build keeps them.
	src := t.TempDir()
	var files []string
	for i := range 1500 {
		p := filepath.Join(src, fmt.Sprintf("gbc-gc-%d-%d", time.Now().UnixNano(), i))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("path %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	paths := strings.Fields(nsRun(t, coordNix, "nix-store", append([]string{"--add"}, files...)...))
	export := filepath.Join(t.TempDir(), "export")
	nsRun(t, coordNix, "sh", append([]string{"-c", `f=$1; shift; nix-store --export "$@" > "$f"`, "sh", export}, paths...)...)
	f, _ := newNSFarm(t, coordNix, gcFlags...)
	in, err := os.Open(export)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ssh", "-p", f.port, "-i", f.admin.Path, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile="+f.knownHosts, "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR", "-F", "/dev/null",
		"someone@127.0.0.1", "import")
	cmd.Stdin = in
	if outp, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("import: %v\n%s", err, outp[:min(len(outp), 2000)])
	}
	in.Close()
	cacheDir := filepath.Join(f.state, "cache")
	if n := consistent(t, cacheDir, true); n != len(paths) {
		t.Fatalf("%d narinfos after import, want %d", n, len(paths))
	}

	gc := exec.Command("ssh", "-p", f.port, "-i", f.admin.Path, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile="+f.knownHosts, "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR", "-F", "/dev/null",
		"someone@127.0.0.1", "cache gc")
	if err := gc.Start(); err != nil {
		t.Fatal(err)
	}
	f.coord.log.waitFor(t, regexp.MustCompile(`cache gc batch`), 60*time.Second)
	if err := f.coord.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-f.coord.done
	gc.Wait()
	left := consistent(t, cacheDir, false)
	if left == 0 || left == len(paths) {
		t.Logf("killed with %d of %d narinfos left (the kill landed outside the deletions)", left, len(paths))
	}

	// Restart on the same state directory; the next collection finishes.
	f.coord = nil
	name, args := nsCmd(coordNix, gbcBin, append([]string{"coordinator", "--state-dir", f.state, "--listen", "127.0.0.1:0",
		"--admin-key", f.admin.Path + ".pub"}, gcFlags...)...)
	f.coord = start(t, name, args...)
	m := f.coord.log.waitFor(t, addrRE, 30*time.Second)
	f.addr, f.port = m[1], m[2]
	hostPub, _ := os.ReadFile(filepath.Join(f.state, "ssh_host_ed25519_key.pub"))
	os.WriteFile(f.knownHosts, []byte(fmt.Sprintf("[127.0.0.1]:%s %s\n", f.port, strings.TrimSpace(string(hostPub)))), 0o644)
	r := f.gc("")
	if n := consistent(t, cacheDir, true); n != 0 {
		t.Errorf("%d narinfos left after the second collection", n)
	}
	t.Logf("second collection: deleted %d, reaped %d orphan NARs", r.Deleted, r.Orphans)
	if r.Deleted != left {
		t.Errorf("second collection deleted %d, want the %d left", r.Deleted, left)
	}
}
