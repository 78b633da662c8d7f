package sshd

import (
	"strings"
	"testing"
)

// FuzzResolve: whatever path a client sends, the resolved virtual path
// stays inside the tree and its names are usable as single path elements.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"/", "/uploads", "/uploads/b/f", "/uploads/../../etc/passwd", "uploads/b/../../x", "/uploads/b/c/d", "/uploads/./b//f", "\x00", `/uploads/b\..\f`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		v, err := resolve(p)
		if err != nil {
			return
		}
		if v.depth < 0 || v.depth > 3 {
			t.Fatalf("%q: depth %d", p, v.depth)
		}
		for _, name := range []string{v.build, v.file} {
			if name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
				t.Fatalf("%q: unsafe name %q", p, name)
			}
		}
		if (v.depth >= 2) != (v.build != "") || (v.depth == 3) != (v.file != "") {
			t.Fatalf("%q: inconsistent %+v", p, v)
		}
	})
}

// FuzzSplitAndRoute: any command line either fails to split or routes
// without panicking.
func FuzzSplitAndRoute(f *testing.F) {
	for _, s := range []string{"build --wait /nix/store/x.drv", "agent 1234 key add 'ssh-ed25519 AAAA c'", `key add --role reader "a b"`, "'", "agent -x key add"} {
		f.Add(s)
	}
	table := commandTable()
	f.Fuzz(func(t *testing.T, line string) {
		words, err := splitCommand(line)
		if err != nil {
			return
		}
		route(table, words)
	})
}
