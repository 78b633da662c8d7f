package cache

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/derivation"
)

// writeDrv writes a derivation into root's /nix/store and returns its path.
func writeDrv(t *testing.T, root, name string, inputs ...string) string {
	t.Helper()
	out := "/nix/store/" + strings.Repeat(string("0123456789abcdfg"[len(name)%16]), 32) + "-" + name
	d := &derivation.Derivation{
		Outputs: []derivation.Output{{Name: "out", Path: out}},
		System:  "x86_64-linux", Builder: "/bin/sh",
		Args: []string{"-c", "echo " + name + " > $out"},
		Env:  []derivation.EnvVar{{Key: "name", Value: name}, {Key: "out", Value: out}},
	}
	for _, in := range inputs {
		d.InputDrvs = append(d.InputDrvs, derivation.InputDrv{Path: in, Outputs: []string{"out"}})
	}
	p, err := d.DrvPath()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "nix/store"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, p), d.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBatchDurabilityOrder is the crash-safety argument of commit, checked
// on the steps a batch takes: every byte is behind one barrier before any
// rename, every NAR is renamed and nar/ synced before the first narinfo is
// renamed, and the directory is synced before the batch returns. A crash
// between any two steps therefore never leaves a narinfo naming a NAR that
// is not durably complete.
func TestBatchDurabilityOrder(t *testing.T) {
	root := t.TempDir()
	c := openCache(t, t.TempDir(), Options{})
	var steps []string
	c.onStep = func(op, path string) { steps = append(steps, op+" "+filepath.Base(path)) }
	lib := writeDrv(t, root, "lib")
	var tops []string
	for _, n := range []string{"app1", "app22", "app333"} {
		tops = append(tops, writeDrv(t, root, n, lib))
	}
	missing := "/nix/store/" + strings.Repeat("z", 32) + "-gone.drv"
	bad, err := c.PublishDerivationClosures(context.Background(), append(tops, tops[0], missing), root)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 1 || bad[missing] == nil {
		t.Fatalf("bad = %v, want only %s", bad, missing)
	}
	// 4 .drvs, each published once even though lib is in three closures.
	var barrier, narDir, dirSync = -1, -1, -1
	nars, infos := map[int]bool{}, 0
	for i, s := range steps {
		op, _, _ := strings.Cut(s, " ")
		switch op {
		case "syncfs", "fsync":
			barrier = i
		case "nar":
			if barrier < 0 {
				t.Fatalf("step %d %q before the barrier: %q", i, s, steps)
			}
			nars[i] = true
		case "sync-nar-dir":
			if len(nars) != 4 {
				t.Fatalf("nar/ synced after %d of 4 NARs: %q", len(nars), steps)
			}
			narDir = i
		case "narinfo":
			if narDir < 0 {
				t.Fatalf("narinfo renamed before its NAR was durably in place: %q", steps)
			}
			infos++
		case "sync-dir":
			dirSync = i
		}
	}
	if infos != 4 || dirSync != len(steps)-1 {
		t.Fatalf("%d narinfos, last step %d of %d: %q", infos, dirSync, len(steps), steps)
	}
	for _, p := range append(tops, lib) {
		if !c.Has(p) {
			t.Fatalf("%s not published", p)
		}
		if _, err := c.ReadDerivation(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		// The cache is public: an nginx or file:// reader running as
		// another user must be able to read both files.
		ni, err := c.Lookup(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{c.narinfoPath(ni.StorePath[len("/nix/store/"):][:32]), filepath.Join(c.Dir(), ni.URL)} {
			if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o644 {
				t.Fatalf("%s: mode %v, %v; want 0644", f, st.Mode(), err)
			}
		}
	}
	// No temp files are left, and a second batch of the same closures
	// writes nothing.
	if left := tempFiles(t, c); len(left) > 0 {
		t.Fatalf("temp files left: %q", left)
	}
	steps = nil
	if bad, err := c.PublishDerivationClosures(context.Background(), tops, root); err != nil || len(bad) != 0 {
		t.Fatal(bad, err)
	}
	if len(steps) != 0 {
		t.Fatalf("republishing did work: %q", steps)
	}
}

// A .drv whose contents do not hash to its path fails the batch before
// anything is renamed.
func TestBatchRejectsForgedDrv(t *testing.T) {
	root := t.TempDir()
	c := openCache(t, t.TempDir(), Options{})
	good := writeDrv(t, root, "good")
	forged := writeDrv(t, root, "forged")
	b, _ := os.ReadFile(filepath.Join(root, forged))
	os.WriteFile(filepath.Join(root, forged), []byte(strings.Replace(string(b), "forged >", "Forged >", 1)), 0o644)
	_, err := c.PublishDerivationClosures(context.Background(), []string{good, forged}, root)
	if err == nil || !strings.Contains(err.Error(), "contents hash to") {
		t.Fatalf("err = %v", err)
	}
	if c.Has(good) || c.Has(forged) {
		t.Fatal("published despite the error")
	}
	ents, _ := os.ReadDir(filepath.Join(c.Dir(), "nar"))
	for _, e := range ents {
		if !e.IsDir() {
			t.Fatalf("nar/ has %s", e.Name())
		}
	}
	if left := tempFiles(t, c); len(left) > 0 {
		t.Fatalf("temp files left: %q", left)
	}
}

// A spool directory removed under a running cache (a cleanup of hidden
// files) is made again by the next publish instead of failing it.
func TestSpoolDirRemovedWhileOpen(t *testing.T) {
	c := openCache(t, t.TempDir(), Options{})
	root := t.TempDir()
	var tops []string
	for i := range 2 * spoolDirCount {
		tops = append(tops, writeDrv(t, root, fmt.Sprintf("respool-%d", i)))
	}
	for _, d := range c.spoolDirs {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	if bad, err := c.PublishDerivationClosures(context.Background(), tops, root); err != nil || len(bad) != 0 {
		t.Fatal(bad, err)
	}
	for _, p := range tops {
		if !c.Has(p) {
			t.Fatalf("%s not published", p)
		}
	}
	if left := tempFiles(t, c); len(left) > 0 {
		t.Fatalf("temp files left: %q", left)
	}
}
