package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
