package nar

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// nixEnv is what the nix tools need to run as root without a daemon or
// build users here; tests set it themselves rather than trust the caller.
func nixEnv() []string {
	return append(os.Environ(), "NIX_CONFIG=build-users-group =\nsubstituters =\nsandbox = false")
}

func nixTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed", name)
	}
	return p
}

func nixDump(t testing.TB, path string) []byte {
	t.Helper()
	cmd := exec.Command(nixTool(t, "nix-store"), "--dump", path)
	cmd.Env = nixEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-store --dump %s: %v: %s", path, err, stderr.String())
	}
	return out
}

func nixHash(t testing.TB, path string) string {
	t.Helper()
	cmd := exec.Command(nixTool(t, "nix-hash"), "--type", "sha256", "--base32", path)
	cmd.Env = nixEnv()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-hash %s: %v", path, err)
	}
	return strings.TrimSpace(string(out))
}

// node describes a tree to build: exactly one of the fields is used.
type node struct {
	data    *string
	exec    bool
	link    string
	entries map[string]node
}

func file(s string) node     { return node{data: &s} }
func execFile(s string) node { return node{data: &s, exec: true} }
func symlink(t string) node  { return node{link: t} }
func dir(e map[string]node) node {
	if e == nil {
		e = map[string]node{}
	}
	return node{entries: e}
}

func build(t testing.TB, path string, n node) {
	t.Helper()
	switch {
	case n.data != nil:
		perm := os.FileMode(0o644)
		if n.exec {
			perm = 0o755
		}
		if err := os.WriteFile(path, []byte(*n.data), perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, perm); err != nil { // umask-proof
			t.Fatal(err)
		}
	case n.link != "":
		if err := os.Symlink(n.link, path); err != nil {
			t.Fatal(err)
		}
	default:
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, c := range n.entries {
			build(t, filepath.Join(path, name), c)
		}
	}
}

// vectorTrees are the trees behind testdata/*.nar (the shared copies lost
// their symlinks and empty directory, so they are rebuilt here).
func vectorTrees() map[string]node {
	return map[string]node{
		"file.txt": file("hello\n"),
		"exec.sh":  execFile("#!/bin/sh\necho hi\n"),
		"link":     symlink("target/path"),
		"dir": dir(map[string]node{
			"Zexec":    execFile("#!/bin/sh\n"),
			"a-9bytes": file("123456789"),
			"b.txt":    file("hello\n"),
			"empty":    file(""),
			"emptydir": dir(nil),
			"sub": dir(map[string]node{
				"a":  file("x"),
				"ln": symlink("../b.txt"),
			}),
		}),
	}
}

type expected struct {
	Base32 string `json:"sha256_nixbase32"`
	Hex    string `json:"sha256_hex"`
	Size   int64  `json:"nar_size"`
	SRI    string `json:"sri"`
}

func loadExpected(t *testing.T) map[string]expected {
	b, err := os.ReadFile("testdata/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]expected
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func dumpBytes(t testing.TB, path string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Dump(&buf, path); err != nil {
		t.Fatalf("Dump(%s): %v", path, err)
	}
	return buf.Bytes()
}

func TestVectors(t *testing.T) {
	exp := loadExpected(t)
	tmp := t.TempDir()
	for name, tree := range vectorTrees() {
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("testdata", name+".nar"))
			if err != nil {
				t.Fatal(err)
			}
			e := exp[name]
			h, n, err := Validate(bytes.NewReader(want))
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if n != e.Size || h.String() != "sha256:"+e.Base32 || h.Hex() != e.Hex || h.SRI() != e.SRI {
				t.Errorf("Validate = %s %d, want sha256:%s %d", h, n, e.Base32, e.Size)
			}

			path := filepath.Join(tmp, name)
			build(t, path, tree)
			if got := dumpBytes(t, path); !bytes.Equal(got, want) {
				t.Errorf("Dump differs from vector (%d vs %d bytes)", len(got), len(want))
			}
			h, n, err = HashPath(path)
			if err != nil || n != e.Size || h.String() != "sha256:"+e.Base32 {
				t.Errorf("HashPath = %s %d %v, want sha256:%s %d", h, n, err, e.Base32, e.Size)
			}

			out := filepath.Join(tmp, name+".restored")
			if err := Restore(bytes.NewReader(want), out); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if got := dumpBytes(t, out); !bytes.Equal(got, want) {
				t.Errorf("dump of restored tree differs from vector")
			}
		})
	}
}

func TestReaderHeaders(t *testing.T) {
	f, err := os.Open("testdata/dir.nar")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nr := NewReader(f)
	var got []string
	for {
		h, err := nr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		line := h.Path + " " + h.Type.String()
		switch h.Type {
		case TypeSymlink:
			line += " -> " + h.LinkTarget
		case TypeRegular, TypeExecutable:
			b, err := io.ReadAll(nr)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) != h.Size {
				t.Fatalf("%s: read %d bytes, header says %d", h.Path, len(b), h.Size)
			}
			line += " " + string(b)
		}
		got = append(got, line)
	}
	want := []string{
		"/ directory",
		"/Zexec executable #!/bin/sh\n",
		"/a-9bytes regular 123456789",
		"/b.txt regular hello\n",
		"/empty regular ",
		"/emptydir directory",
		"/sub directory",
		"/sub/a regular x",
		"/sub/ln symlink -> ../b.txt",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("headers:\n got %q\nwant %q", got, want)
	}
	if nr.Offset() != 1624 {
		t.Errorf("Offset = %d, want 1624", nr.Offset())
	}
}

// TestAgainstNix builds awkward trees and compares Dump and HashPath with
// the real nix-store --dump and nix-hash.
func TestAgainstNix(t *testing.T) {
	nixTool(t, "nix-store")
	big := strings.Repeat("0123456789abcdef", 70000) + "xyz" // > bufSize, odd length
	trees := map[string]node{
		"empty-file": file(""),
		"seven":      file("1234567"),
		"eight":      file("12345678"),
		"big":        file(big),
		"exec":       execFile("#!/bin/sh\nexit 0\n"),
		"dangling":   symlink("/nonexistent/\xff/target"),
		"empty-dir":  dir(nil),
		"mixed": dir(map[string]node{
			"é-unicode":              file("accent"),
			"日本":                     file("cjk"),
			"\xff\xfe-bytes":         file("not utf-8 name"),
			"with space":             file(" "),
			"new\nline":              file("nl"),
			"B":                      file("upper sorts before lower"),
			"a":                      dir(map[string]node{"b": dir(map[string]node{"c": dir(map[string]node{"d": file("deep")})})}),
			"a.b":                    file("dot sorts before slash-free names"),
			"a-":                     file(""),
			"empty":                  dir(nil),
			"exe":                    execFile("x"),
			"loop":                   symlink("loop"),
			"up":                     symlink("../../.."),
			"big":                    file(big),
			strings.Repeat("n", 255): file("max name"),
		}),
	}
	tmp := t.TempDir()
	for name, tree := range trees {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(tmp, name)
			build(t, path, tree)
			want := nixDump(t, path)
			got := dumpBytes(t, path)
			if !bytes.Equal(got, want) {
				t.Fatalf("Dump differs from nix-store --dump (%d vs %d bytes)", len(got), len(want))
			}
			h, n, err := HashPath(path)
			if err != nil {
				t.Fatal(err)
			}
			if wantHash := nixHash(t, path); h.String() != "sha256:"+wantHash || n != int64(len(want)) {
				t.Errorf("HashPath = %s %d, nix-hash says %s (%d bytes)", h, n, wantHash, len(want))
			}
			vh, vn, err := Validate(bytes.NewReader(want))
			if err != nil || !vh.Equal(h) || vn != n {
				t.Errorf("Validate = %s %d %v, want %s %d", vh, vn, err, h, n)
			}
			out := filepath.Join(tmp, name+".restored")
			if err := Restore(bytes.NewReader(want), out); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if again := dumpBytes(t, out); !bytes.Equal(again, want) {
				t.Errorf("dump → restore → dump not equal")
			}
		})
	}
}

func TestDumpRefusesSpecialFiles(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	if err := mkfifo(p); err != nil {
		t.Skip(err)
	}
	if err := Dump(io.Discard, p); err == nil {
		t.Fatal("Dump of a FIFO succeeded")
	}
}

func TestRestoreRefusesExisting(t *testing.T) {
	nar, _ := os.ReadFile("testdata/file.txt.nar")
	dir := t.TempDir()
	if err := Restore(bytes.NewReader(nar), dir); err == nil {
		t.Fatal("Restore into an existing directory succeeded")
	}
}

// TestRestoreLeavesNothingOnError checks that a NAR that fails half way
// leaves neither dir nor a temporary sibling behind.
func TestRestoreLeavesNothingOnError(t *testing.T) {
	nar, _ := os.ReadFile("testdata/dir.nar")
	parent := t.TempDir()
	out := filepath.Join(parent, "out")
	if err := Restore(bytes.NewReader(nar[:len(nar)-100]), out); err == nil {
		t.Fatal("Restore of a truncated NAR succeeded")
	}
	ents, _ := os.ReadDir(parent)
	if len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

// TestRestoreSymlinkNotFollowed: a symlink entry pointing outside, followed
// by nothing that could write through it (names are unique), must be
// created as a link and nothing written at its target.
func TestRestoreSymlinkNotFollowed(t *testing.T) {
	parent := t.TempDir()
	outside := filepath.Join(parent, "outside")
	var b narBuilder
	b.s("nix-archive-1").s("(").s("type").s("directory")
	b.entry("evil", func() { b.s("(").s("type").s("symlink").s("target").s(outside).s(")") })
	b.s(")")
	out := filepath.Join(parent, "out")
	if err := Restore(bytes.NewReader(b.buf.Bytes()), out); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(out, "evil")); err != nil || target != outside {
		t.Fatalf("Readlink = %q, %v", target, err)
	}
	if _, err := os.Lstat(outside); err == nil {
		t.Fatal("something was created outside the restore dir")
	}
}

// narBuilder writes raw tokens so tests can make malformed archives.
type narBuilder struct{ buf bytes.Buffer }

func (b *narBuilder) n(v uint64) *narBuilder {
	binary.Write(&b.buf, binary.LittleEndian, v)
	return b
}

func (b *narBuilder) s(s string) *narBuilder {
	b.n(uint64(len(s)))
	b.buf.WriteString(s)
	b.buf.Write(make([]byte, padLen(uint64(len(s)))))
	return b
}

func (b *narBuilder) raw(p []byte) *narBuilder { b.buf.Write(p); return b }

func (b *narBuilder) entry(name string, node func()) {
	b.s("entry").s("(").s("name").s(name).s("node")
	node()
	b.s(")")
}

func regular(b *narBuilder, contents string) {
	b.s("(").s("type").s("regular").s("contents").s(contents).s(")")
}

func dirWith(names ...string) []byte {
	var b narBuilder
	b.s("nix-archive-1").s("(").s("type").s("directory")
	for _, n := range names {
		b.entry(n, func() { regular(&b, "x") })
	}
	b.s(")")
	return b.buf.Bytes()
}

func TestCorrupt(t *testing.T) {
	good, _ := os.ReadFile("testdata/dir.nar")
	file, _ := os.ReadFile("testdata/file.txt.nar")

	badPad := bytes.Clone(file)
	// "hello\n" is at 96..102 in file.txt.nar; 102..104 is padding.
	badPad[103] = 1

	var hugeLen narBuilder
	hugeLen.s("nix-archive-1").s("(").s("type").s("symlink").s("target").n(1 << 62)

	var hugeFile narBuilder
	hugeFile.s("nix-archive-1").s("(").s("type").s("regular").s("contents").n(1 << 40).raw([]byte("short"))

	var maxFile narBuilder
	maxFile.s("nix-archive-1").s("(").s("type").s("regular").s("contents").n(^uint64(0))

	var unknownType narBuilder
	unknownType.s("nix-archive-1").s("(").s("type").s("fifo").s(")")

	var badExec narBuilder
	badExec.s("nix-archive-1").s("(").s("type").s("regular").s("executable").s("x").s("contents").s("").s(")")

	var deep narBuilder
	deep.s("nix-archive-1")
	for range MaxDepth + 1 {
		deep.s("(").s("type").s("directory").s("entry").s("(").s("name").s("d").s("node")
	}

	var emptyTarget narBuilder
	emptyTarget.s("nix-archive-1").s("(").s("type").s("symlink").s("target").s("").s(")")

	var longName narBuilder
	longName.s("nix-archive-1").s("(").s("type").s("directory").s("entry").s("(").s("name").s(strings.Repeat("a", MaxNameLen+1))

	tests := []struct {
		name string
		in   []byte
		want string // substring of the error
	}{
		{"empty", nil, "truncated"},
		{"bad magic", append([]byte{13, 0, 0, 0, 0, 0, 0, 0}, "nix-archive-2\x00\x00\x00"...), "bad magic"},
		{"truncated in header", good[:20], "truncated"},
		{"truncated in contents", file[:99], "truncated"},
		{"truncated before close", good[:len(good)-8], "truncated"},
		{"trailing data", append(bytes.Clone(file), 0), "trailing data"},
		{"bad padding", badPad, "offset 103"},
		{"unsorted", dirWith("b", "a"), "not sorted"},
		{"duplicate", dirWith("a", "a"), "duplicate"},
		{"dotdot", dirWith(".."), `".." not allowed`},
		{"dot", dirWith("."), `"." not allowed`},
		{"empty name", dirWith(""), "empty entry name"},
		{"slash", dirWith("a/b"), "contains '/'"},
		{"nul", dirWith("a\x00b"), "contains NUL"},
		{"huge length", hugeLen.buf.Bytes(), "exceeds limit"},
		{"huge file truncated", hugeFile.buf.Bytes(), "truncated"},
		{"file size overflow", maxFile.buf.Bytes(), "too large"},
		{"unknown type", unknownType.buf.Bytes(), "unknown node type"},
		{"executable with value", badExec.buf.Bytes(), `expected ""`},
		{"too deep", deep.buf.Bytes(), "nesting deeper"},
		{"empty target", emptyTarget.buf.Bytes(), "empty symlink target"},
		{"long name", longName.buf.Bytes(), "exceeds limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Validate(bytes.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate error = %v, want it to mention %q", err, tc.want)
			}
			var ne *Error
			if !errors.As(err, &ne) {
				t.Fatalf("error %v is not a *nar.Error", err)
			}
			if !strings.Contains(err.Error(), "offset ") {
				t.Errorf("error %q does not name an offset", err)
			}
			out := filepath.Join(t.TempDir(), "out")
			if err := Restore(bytes.NewReader(tc.in), out); err == nil {
				t.Fatal("Restore succeeded")
			}
			if _, err := os.Lstat(out); err == nil {
				t.Fatal("Restore left the target behind")
			}
		})
	}
}

// TestReaderStopsAtEnd: with a *bufio.Reader the Reader must leave what
// follows the archive unread, for NARs embedded in other streams.
func TestReaderStopsAtEnd(t *testing.T) {
	nar, _ := os.ReadFile("testdata/dir.nar")
	br := bufioReader(io.MultiReader(bytes.NewReader(nar), strings.NewReader("NEXT")))
	nr := NewReader(br)
	for {
		if _, err := nr.Next(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "NEXT" {
		t.Fatalf("after archive: %q", rest)
	}
}
