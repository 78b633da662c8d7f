package e2e

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBuildOfSpecialFiles: `ssh … build` of a .drv that is a FIFO, a
// symlink to a FIFO or a symlink to /dev/zero is refused with an error
// saying what the file is, without blocking the submission (a FIFO opened
// for reading blocks until a writer comes, which here never does) or
// reading the device; the coordinator answers afterwards and recorded no
// build.
func TestBuildOfSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	if err := os.Mkdir(store, 0o755); err != nil {
		t.Fatal(err)
	}
	fifo := store + "/22222222222222222222222222222222-fifo.drv"
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	fifoLink := store + "/33333333333333333333333333333333-fifolink.drv"
	if err := os.Symlink(filepath.Base(fifo), fifoLink); err != nil {
		t.Fatal(err)
	}
	zero := store + "/44444444444444444444444444444444-zero.drv"
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	f := newFarmWith(t, "--store-dir", store)
	for _, c := range []struct{ path, want string }{
		{fifo, "named pipe"},
		{fifoLink, "named pipe"},
		{zero, "not in the store"},
	} {
		r := f.ssh(f.admin, "build "+c.path)
		if r.Code == 0 {
			t.Fatalf("build %s accepted: %s", c.path, r.Stdout)
		}
		if !strings.Contains(r.Stderr, c.want) {
			t.Errorf("build %s: stderr %q does not say %q", c.path, r.Stderr, c.want)
		}
	}
	r := f.ssh(f.admin, "build "+fifo+" "+fifoLink+" "+zero)
	if r.Code == 0 {
		t.Fatalf("build of three special files accepted: %s", r.Stdout)
	}
	f.mustSSH("status")
	if out := f.mustSSH("builds --json"); strings.Contains(out, "\"id\"") {
		t.Fatalf("refused builds were recorded: %s", out)
	}
}

// TestOutputReferencesAccepted: real Nix builds whose outputs refer to an
// input source, to themselves and to paths that are only in their input
// closure (not direct inputs) are accepted, and each narinfo lists exactly
// the references Nix recorded for the path: the coordinator's reference
// checks (claimed ⊆ own outputs ∪ input closure, claimed = what the NAR
// contains) agree with Nix's scanning.
func TestOutputReferencesAccepted(t *testing.T) {
	f := newFarm(t)
	f.addAgent("refs-agent", "--max-parallel-builds", "2")
	nonce := fmt.Sprint(time.Now().UnixNano())
	var drvs []string
	for _, attr := range []string{"base", "mid", "top"} {
		drvs = append(drvs, run(t, "nix-instantiate", "testdata/refs.nix", "--argstr", "nonce", nonce, "-A", attr))
	}
	r := f.ssh(f.admin, "build --wait "+strings.Join(drvs, " "))
	if r.Code != 0 {
		t.Fatalf("build --wait: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, drv := range drvs {
		out := run(t, "nix-store", "-q", "--outputs", drv)
		want := map[string]bool{}
		for _, p := range lines(run(t, "nix-store", "-q", "--references", out)) {
			want[filepath.Base(p)] = true
		}
		if len(want) == 0 {
			t.Fatalf("%s: Nix recorded no references; the test needs some", out)
		}
		ni, err := os.ReadFile(filepath.Join(f.state, "cache", strings.SplitN(filepath.Base(out), "-", 2)[0]+".narinfo"))
		if err != nil {
			t.Fatalf("narinfo of %s: %v", out, err)
		}
		var got map[string]bool
		for _, l := range strings.Split(string(ni), "\n") {
			if refs, ok := strings.CutPrefix(l, "References:"); ok {
				got = map[string]bool{}
				for _, r := range strings.Fields(refs) {
					got[r] = true
				}
			}
		}
		if !maps.Equal(got, want) {
			t.Errorf("%s: narinfo references %v, Nix recorded %v", out, got, want)
		}
	}
}
