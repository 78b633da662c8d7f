// Package golden compares test output with golden files under a
// directory, or rewrites them when the test binary runs with -update:
//
//	go test ./cmd/gbc ./sshd -run TestHelpGolden -update   (make golden)
//
// Import it from tests only.
package golden

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Dir is a directory of golden files, one per name.
type Dir struct {
	t      *testing.T
	path   string
	update bool
	seen   []string
}

// update is registered once per test binary that imports this package.
var update = flag.Bool("update", false, "rewrite the golden files from the current output")

// Open returns the golden directory path for t. With -update it is emptied
// first, so files no output produces any more disappear; Close reports such
// files otherwise.
func Open(t *testing.T, path string) *Dir {
	t.Helper()
	d := &Dir{t: t, path: path, update: *update}
	if d.update {
		if err := os.RemoveAll(path); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// Check compares got with the golden file name (or writes it with
// -update); what is the command line or call that produced got, for the
// failure message.
func (d *Dir) Check(name, what string, got []byte) {
	d.t.Helper()
	d.seen = append(d.seen, name)
	path := filepath.Join(d.path, name)
	if d.update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			d.t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		d.t.Errorf("%s: %v (after an intended change: make golden)", what, err)
		return
	}
	if !bytes.Equal(want, got) {
		d.t.Errorf("%s differs from the output of %s (after an intended change: make golden)\n--- golden\n%s\n--- got\n%s", path, what, want, got)
	}
}

// Close fails the test for every golden file that no Check asked for.
func (d *Dir) Close() {
	d.t.Helper()
	entries, err := os.ReadDir(d.path)
	if err != nil {
		d.t.Fatal(err)
	}
	for _, e := range entries {
		if !slices.Contains(d.seen, e.Name()) {
			d.t.Errorf("%s: no output produces this file any more; delete it (make golden)", filepath.Join(d.path, e.Name()))
		}
	}
}
