package derivation

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// storeUnder makes root/nix/store holding a copy of a real .drv and
// returns root and the .drv's store path.
func storeUnder(t *testing.T) (root, drv string) {
	t.Helper()
	root = t.TempDir()
	store := filepath.Join(root, "nix", "store")
	if err := os.MkdirAll(store, 0o755); err != nil {
		t.Fatal(err)
	}
	const base = "fddm4k6zgckh82rck3n31awvwvh86p98-simple.drv"
	b, err := os.ReadFile(filepath.Join("testdata", base))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(store, base), b, 0o444); err != nil {
		t.Fatal(err)
	}
	return root, "/nix/store/" + base
}

// TestReadStoreFileRefusesSpecialFiles: a FIFO (which would block the
// reader), a symlink to /dev/zero (which would feed it without end), a
// symlink out of the store and an oversized file are refused with an
// error naming what they are; none of them blocks.
func TestReadStoreFileRefusesSpecialFiles(t *testing.T) {
	root, good := storeUnder(t)
	if _, err := ReadStoreFile(root, good); err != nil {
		t.Fatalf("regular .drv: %v", err)
	}
	link := "/nix/store/11111111111111111111111111111111-link.drv"
	if err := os.Symlink(filepath.Base(good), filepath.Join(root, link)); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadStoreFile(root, link); err != nil {
		t.Fatalf("symlink to a .drv in the same store: %v", err)
	}

	fifo := "/nix/store/22222222222222222222222222222222-fifo.drv"
	if err := syscall.Mkfifo(filepath.Join(root, fifo), 0o644); err != nil {
		t.Fatal(err)
	}
	fifoLink := "/nix/store/33333333333333333333333333333333-fifolink.drv"
	if err := os.Symlink(filepath.Join(root, fifo), filepath.Join(root, fifoLink)); err != nil {
		t.Fatal(err)
	}
	zero := "/nix/store/44444444444444444444444444444444-zero.drv"
	if err := os.Symlink("/dev/zero", filepath.Join(root, zero)); err != nil {
		t.Fatal(err)
	}
	outside := "/nix/store/55555555555555555555555555555555-outside.drv"
	elsewhere := filepath.Join(t.TempDir(), "x.drv")
	if err := os.WriteFile(elsewhere, []byte("Derive("), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(root, outside)); err != nil {
		t.Fatal(err)
	}
	big := "/nix/store/66666666666666666666666666666666-big.drv"
	f, err := os.Create(filepath.Join(root, big))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxSize + 1); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	f.Close()
	dir := "/nix/store/77777777777777777777777777777777-dir.drv"
	if err := os.Mkdir(filepath.Join(root, dir), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{fifo, "named pipe"},
		{fifoLink, "named pipe"},
		{zero, "not in the store"},
		{outside, "not in the store"},
		{big, "larger than"},
		{dir, "directory"},
	} {
		_, err := ReadStoreFile(root, c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one saying %q", c.path, err, c.want)
		}
	}
	// The real filesystem: /dev/zero itself and a FIFO outside any store
	// through ReadFile (which follows symlinks anywhere).
	for _, p := range []string{"/dev/zero", filepath.Join(root, fifo)} {
		_, err := ReadFile(p)
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("ReadFile(%s): err %v, want not a regular file", p, err)
		}
	}
}
