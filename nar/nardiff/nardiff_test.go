package nardiff

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/nar"
)

// node is a file in a test tree: content with mode, a symlink (link set)
// or a directory (dir set).
type node struct {
	content string
	exec    bool
	link    string
	dir     bool
}

// dump builds the tree on disk and returns its NAR, as nix-store --dump
// would write it.
func dump(t *testing.T, tree map[string]node) []byte {
	t.Helper()
	root := filepath.Join(t.TempDir(), "out")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(tree))
	for p := range tree {
		names = append(names, p)
	}
	slices.Sort(names) // parents before children
	for _, p := range names {
		n := tree[p]
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case n.dir:
			err = os.Mkdir(full, 0o755)
		case n.link != "":
			err = os.Symlink(n.link, full)
		default:
			mode := os.FileMode(0o644)
			if n.exec {
				mode = 0o755
			}
			err = os.WriteFile(full, []byte(n.content), mode)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := nar.Dump(&buf, root); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compare(t *testing.T, a, b map[string]node, o Options) *Report {
	t.Helper()
	rep, err := Compare(bytes.NewReader(dump(t, a)), bytes.NewReader(dump(t, b)), o)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// summary is "kind path [what]" per difference.
func summary(r *Report) []string {
	var out []string
	for _, d := range r.Differences {
		s := string(d.Kind) + " " + d.Path
		if len(d.What) > 0 {
			s += " " + strings.Join(d.What, ",")
		}
		out = append(out, s)
	}
	return out
}

func TestCompare(t *testing.T) {
	base := map[string]node{
		"bin":           {dir: true},
		"bin/hello":     {content: "#!/bin/sh\necho hi\n", exec: true},
		"lib":           {dir: true},
		"lib/empty":     {dir: true},
		"lib/link":      {link: "../bin/hello"},
		"share":         {dir: true},
		"share/a.txt":   {content: "one\ntwo\nthree\n"},
		"share/a-b.txt": {content: "x"},
		"share/a":       {dir: true},
		"share/a/z":     {content: "z"},
		"\xff\xfename":  {content: "not utf-8 name"},
	}
	with := func(change func(m map[string]node)) map[string]node {
		m := map[string]node{}
		for k, v := range base {
			m[k] = v
		}
		change(m)
		return m
	}
	cases := []struct {
		name  string
		right map[string]node
		want  []string
	}{
		{"same", base, nil},
		{"contents", with(func(m map[string]node) { m["share/a.txt"] = node{content: "one\nTWO\nthree\n"} }),
			[]string{"changed /share/a.txt sha256"}},
		{"size", with(func(m map[string]node) { m["share/a-b.txt"] = node{content: "xy"} }),
			[]string{"changed /share/a-b.txt size,sha256"}},
		{"executable bit", with(func(m map[string]node) { m["bin/hello"] = node{content: "#!/bin/sh\necho hi\n"} }),
			[]string{"changed /bin/hello executable"}},
		{"link target", with(func(m map[string]node) { m["lib/link"] = node{link: "../bin/other"} }),
			[]string{"changed /lib/link link_target"}},
		{"empty dir gone", with(func(m map[string]node) { delete(m, "lib/empty") }),
			[]string{"only-left /lib/empty"}},
		{"new empty dir", with(func(m map[string]node) { m["lib/empty2"] = node{dir: true} }),
			[]string{"only-right /lib/empty2"}},
		{"file became dir", with(func(m map[string]node) {
			m["share/a-b.txt"] = node{dir: true}
			m["share/a-b.txt/in"] = node{content: "in"}
		}), []string{"changed /share/a-b.txt type,size,sha256", "only-right /share/a-b.txt/in"}},
		{"dir became symlink", with(func(m map[string]node) {
			delete(m, "share/a/z")
			m["share/a"] = node{link: "a-b.txt"}
		}), []string{"changed /share/a type,link_target", "only-left /share/a/z"}},
		{"invalid utf-8 name", with(func(m map[string]node) { m["\xff\xfename"] = node{content: "changed"} }),
			[]string{"changed /\xff\xfename size,sha256"}},
		{"subtree gone", with(func(m map[string]node) {
			for k := range m {
				if strings.HasPrefix(k, "lib") {
					delete(m, k)
				}
			}
		}), []string{"only-left /lib", "only-left /lib/empty", "only-left /lib/link"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep := compare(t, base, c.right, Options{})
			if got := summary(rep); !slices.Equal(got, c.want) {
				t.Fatalf("differences:\n%q\nwant\n%q", got, c.want)
			}
			if rep.Same() != (len(c.want) == 0) {
				t.Fatalf("Same() = %v with %d differences", rep.Same(), len(c.want))
			}
			if rep.LeftEntries != len(base)+1 {
				t.Fatalf("left entries %d, want %d (the tree and its root)", rep.LeftEntries, len(base)+1)
			}
		})
	}
}

func TestFirstDifferingLines(t *testing.T) {
	a := map[string]node{"f": {content: "l1\nl2\nl3\nl4\nl5\n"}, "bin": {content: "\x00\x01", exec: true}}
	b := map[string]node{"f": {content: "l1\nl2\nX3\nl4\nl5\nl6\n"}, "bin": {content: "\x00\x02", exec: true}}
	rep := compare(t, a, b, Options{MaxLines: 2})
	if len(rep.Differences) != 2 {
		t.Fatalf("differences %v", summary(rep))
	}
	bin, f := rep.Differences[0], rep.Differences[1]
	if bin.Lines != nil {
		t.Fatalf("binary file got lines %+v", bin.Lines)
	}
	want := &Lines{Line: 3, Left: []string{"l3", "l4"}, Right: []string{"X3", "l4"}}
	if f.Lines == nil || f.Lines.Line != want.Line || !slices.Equal(f.Lines.Left, want.Left) || !slices.Equal(f.Lines.Right, want.Right) {
		t.Fatalf("lines %+v, want %+v", f.Lines, want)
	}
	// A file larger than MaxTextSize is compared by hash only.
	rep = compare(t, a, b, Options{MaxTextSize: 4})
	if rep.Differences[1].Lines != nil {
		t.Fatalf("large file got lines")
	}
	// Only one side longer: the other side's lines are empty.
	rep = compare(t, map[string]node{"f": {content: "a\n"}}, map[string]node{"f": {content: "a\nb\n"}}, Options{})
	l := rep.Differences[0].Lines
	if l.Line != 2 || len(l.Left) != 0 || !slices.Equal(l.Right, []string{"b"}) {
		t.Fatalf("lines %+v", l)
	}
}

func TestMaxDifferences(t *testing.T) {
	a, b := map[string]node{}, map[string]node{}
	for i := 0; i < 20; i++ {
		a[string(rune('a'+i))] = node{content: "left"}
		b[string(rune('a'+i))] = node{content: "right"}
	}
	rep := compare(t, a, b, Options{MaxDifferences: 5})
	if len(rep.Differences) != 5 || rep.Omitted != 15 || rep.Same() {
		t.Fatalf("kept %d, omitted %d", len(rep.Differences), rep.Omitted)
	}
	var out bytes.Buffer
	if err := rep.WriteText(&out, ""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "… and 15 more differences") {
		t.Fatalf("text:\n%s", out.String())
	}
}

func TestRootTypes(t *testing.T) {
	file := func(s string) []byte {
		p := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := nar.Dump(&buf, p); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	rep, err := Compare(bytes.NewReader(file("a\n")), bytes.NewReader(dump(t, map[string]node{"x": {content: "a\n"}})), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := summary(rep); !slices.Equal(got, []string{"changed / type,size,sha256", "only-right /x"}) {
		t.Fatalf("differences %q", got)
	}
}

func TestTextEscapesNames(t *testing.T) {
	rep := compare(t, map[string]node{"a\x1b[2Jb": {content: "\x1b[31mred\n"}}, map[string]node{"a\x1b[2Jb": {content: "\x1b[32mgreen\n"}}, Options{})
	var out bytes.Buffer
	if err := rep.WriteText(&out, "  "); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "\x1b") {
		t.Fatalf("escape character printed:\n%q", out.String())
	}
	if !strings.Contains(out.String(), `/a\x1b[2Jb`) || !strings.Contains(out.String(), `- \x1b[31mred`) {
		t.Fatalf("text:\n%s", out.String())
	}
}

func TestInvalidArchive(t *testing.T) {
	good := dump(t, map[string]node{"a": {content: "a"}})
	for _, bad := range [][]byte{nil, []byte("nix-archive-1"), good[:len(good)-8]} {
		if _, err := Compare(bytes.NewReader(good), bytes.NewReader(bad), Options{}); err == nil || !strings.Contains(err.Error(), "right archive") {
			t.Fatalf("truncated right archive: err %v", err)
		}
	}
}

func TestComparePaths(t *testing.T) {
	ordered := []string{"/", "/a", "/a/x", "/a/x/y", "/a-b", "/a0", "/b", "/\xff"}
	for i := range ordered {
		for j := range ordered {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := ComparePaths(ordered[i], ordered[j]); got != want {
				t.Errorf("ComparePaths(%q, %q) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
}
