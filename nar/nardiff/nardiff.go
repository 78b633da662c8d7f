// Package nardiff compares two NARs entry by entry, streaming: both
// archives are read once, side by side, in their canonical order (names
// sorted within each directory), so memory is bounded by the deepest path,
// the text kept of one small file per side and the number of differences
// reported, never by the archives' sizes.
//
// An entry differs when its type, size, executable bit, symlink target or
// SHA-256 of contents differ; an entry present in one archive only is
// reported as such (each entry of a subtree one side lacks, so that a
// report names every file). For small text files the first differing
// lines are kept.
package nardiff

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/nar"
)

// Kind says how an entry differs.
type Kind string

const (
	Changed   Kind = "changed"    // present on both sides, different
	OnlyLeft  Kind = "only-left"  // absent from the right archive
	OnlyRight Kind = "only-right" // absent from the left archive
)

// Entry is one node of an archive as compared.
type Entry struct {
	Type       string `json:"type"` // regular, symlink or directory
	Executable bool   `json:"executable,omitempty"`
	Size       int64  `json:"size"`
	LinkTarget string `json:"link_target,omitempty"`
	SHA256     string `json:"sha256,omitempty"` // hex, of a regular file's contents
}

// Lines are the first differing lines of a small text file on both sides.
type Lines struct {
	// Line is the 1-based number of the first line that differs.
	Line  int      `json:"line"`
	Left  []string `json:"left"`
	Right []string `json:"right"`
}

// Difference is one entry that is not the same on both sides.
type Difference struct {
	// Path is "/" for the root, "/a/b" below it; names are raw bytes,
	// not necessarily UTF-8.
	Path  string `json:"path"`
	Kind  Kind   `json:"kind"`
	Left  *Entry `json:"left,omitempty"`
	Right *Entry `json:"right,omitempty"`
	// What lists the fields that differ (type, executable, size,
	// link_target, sha256) for a Changed entry.
	What  []string `json:"what,omitempty"`
	Lines *Lines   `json:"lines,omitempty"`
}

// Report is the outcome of a comparison.
type Report struct {
	Differences []Difference `json:"differences"`
	// Omitted counts differences found beyond Options.MaxDifferences.
	Omitted int `json:"omitted,omitempty"`
	// Entries on each side.
	LeftEntries  int `json:"left_entries"`
	RightEntries int `json:"right_entries"`
}

// Same reports whether the archives hold the same tree.
func (r *Report) Same() bool { return len(r.Differences) == 0 && r.Omitted == 0 }

// Options bound a comparison; zero values take the defaults.
type Options struct {
	// MaxDifferences kept in the report (default 1000); the rest are
	// only counted.
	MaxDifferences int
	// MaxTextSize: files up to this many bytes that are UTF-8 text
	// without NUL get their first differing lines (default 64 KiB).
	MaxTextSize int64
	// MaxLines per side kept from the first differing line (default 3),
	// each cut to MaxLineLen bytes (default 200).
	MaxLines   int
	MaxLineLen int
}

func (o Options) withDefaults() Options {
	if o.MaxDifferences <= 0 {
		o.MaxDifferences = 1000
	}
	if o.MaxTextSize <= 0 {
		o.MaxTextSize = 64 << 10
	}
	if o.MaxLines <= 0 {
		o.MaxLines = 3
	}
	if o.MaxLineLen <= 0 {
		o.MaxLineLen = 200
	}
	return o
}

// side is one archive being walked, one node ahead.
type side struct {
	name string
	r    *nar.Reader
	cur  *nar.Header // nil at the end
	n    int
}

func (s *side) next() error {
	h, err := s.r.Next()
	if errors.Is(err, io.EOF) {
		s.cur = nil
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s archive: %w", s.name, err)
	}
	s.cur = h
	s.n++
	return nil
}

// content reads the current file's contents: its SHA-256 and, when it
// is at most keep bytes, the bytes themselves.
func (s *side) content(keep int64) (sum string, text []byte, err error) {
	h := sha256.New()
	var buf *bytes.Buffer
	if s.cur.Size <= keep {
		buf = bytes.NewBuffer(make([]byte, 0, s.cur.Size))
	}
	w := io.Writer(h)
	if buf != nil {
		w = io.MultiWriter(h, buf)
	}
	if _, err := io.Copy(w, s.r); err != nil {
		return "", nil, fmt.Errorf("%s archive: read %q: %w", s.name, s.cur.Path, err)
	}
	if buf != nil {
		text = buf.Bytes()
	}
	return hex.EncodeToString(h.Sum(nil)), text, nil
}

func (s *side) entry(keep int64) (*Entry, []byte, error) {
	h := s.cur
	e := &Entry{Size: h.Size}
	switch h.Type {
	case nar.TypeRegular, nar.TypeExecutable:
		e.Type = "regular"
		e.Executable = h.Type == nar.TypeExecutable
		sum, text, err := s.content(keep)
		if err != nil {
			return nil, nil, err
		}
		e.SHA256 = sum
		return e, text, nil
	case nar.TypeSymlink:
		e.Type = "symlink"
		e.LinkTarget = h.LinkTarget
	case nar.TypeDirectory:
		e.Type = "directory"
	default:
		return nil, nil, fmt.Errorf("%s archive: %q: unknown type %v", s.name, h.Path, h.Type)
	}
	return e, nil, nil
}

// Compare reads both archives to their ends and reports how they differ.
// An archive that is not a valid NAR is an error naming the side.
func Compare(left, right io.Reader, opts Options) (*Report, error) {
	o := opts.withDefaults()
	l := &side{name: "left", r: nar.NewReader(left)}
	r := &side{name: "right", r: nar.NewReader(right)}
	if err := errors.Join(l.next(), r.next()); err != nil {
		return nil, err
	}
	rep := &Report{Differences: []Difference{}}
	add := func(d Difference) {
		if len(rep.Differences) < o.MaxDifferences {
			rep.Differences = append(rep.Differences, d)
		} else {
			rep.Omitted++
		}
	}
	for l.cur != nil || r.cur != nil {
		var c int
		switch {
		case l.cur == nil:
			c = 1
		case r.cur == nil:
			c = -1
		default:
			c = ComparePaths(l.cur.Path, r.cur.Path)
		}
		switch {
		case c < 0:
			e, _, err := l.entry(0)
			if err != nil {
				return nil, err
			}
			add(Difference{Path: l.cur.Path, Kind: OnlyLeft, Left: e})
			if err := l.next(); err != nil {
				return nil, err
			}
		case c > 0:
			e, _, err := r.entry(0)
			if err != nil {
				return nil, err
			}
			add(Difference{Path: r.cur.Path, Kind: OnlyRight, Right: e})
			if err := r.next(); err != nil {
				return nil, err
			}
		default:
			le, lt, err := l.entry(o.MaxTextSize)
			if err != nil {
				return nil, err
			}
			re, rt, err := r.entry(o.MaxTextSize)
			if err != nil {
				return nil, err
			}
			if what := differing(le, re); len(what) > 0 {
				d := Difference{Path: l.cur.Path, Kind: Changed, Left: le, Right: re, What: what}
				if lt != nil && rt != nil && isText(lt) && isText(rt) {
					d.Lines = firstDifferingLines(lt, rt, o)
				}
				add(d)
			}
			if err := errors.Join(l.next(), r.next()); err != nil {
				return nil, err
			}
		}
	}
	rep.LeftEntries, rep.RightEntries = l.n, r.n
	return rep, nil
}

func differing(a, b *Entry) []string {
	var what []string
	if a.Type != b.Type {
		what = append(what, "type")
	}
	if a.Executable != b.Executable {
		what = append(what, "executable")
	}
	if a.Size != b.Size {
		what = append(what, "size")
	}
	if a.LinkTarget != b.LinkTarget {
		what = append(what, "link_target")
	}
	if a.SHA256 != b.SHA256 {
		what = append(what, "sha256")
	}
	return what
}

// ComparePaths orders archive paths as a NAR lists them: component by
// component, each compared as bytes, a directory before its entries. Names
// hold neither '/' nor NUL, so this is byte order with '/' ranked lowest.
func ComparePaths(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if x == '/' {
			return -1
		}
		if y == '/' {
			return 1
		}
		if x < y {
			return -1
		}
		return 1
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}

func isText(b []byte) bool {
	return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0
}

// firstDifferingLines finds the first line that differs and keeps up to
// MaxLines lines of each side from there.
func firstDifferingLines(a, b []byte, o Options) *Lines {
	la := strings.SplitAfter(string(a), "\n")
	lb := strings.SplitAfter(string(b), "\n")
	i := 0
	for i < len(la) && i < len(lb) && la[i] == lb[i] {
		i++
	}
	pick := func(ls []string) []string {
		out := []string{}
		for j := i; j < len(ls) && len(out) < o.MaxLines; j++ {
			s := strings.TrimSuffix(ls[j], "\n")
			if s == "" && j == len(ls)-1 {
				break // the empty piece after a final newline
			}
			out = append(out, truncate(s, o.MaxLineLen))
		}
		return out
	}
	return &Lines{Line: i + 1, Left: pick(la), Right: pick(lb)}
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// WriteText prints the report for people, one difference per line (and
// the differing lines of text files indented below it), every name and
// line escaped (internal/text.Escape): they come from a build.
func (r *Report) WriteText(w io.Writer, indent string) error {
	var b strings.Builder
	for _, d := range r.Differences {
		fmt.Fprintf(&b, "%s%s %s", indent, d.Kind, text.Escape(d.Path))
		switch d.Kind {
		case OnlyLeft:
			fmt.Fprintf(&b, " (%s)", describe(d.Left))
		case OnlyRight:
			fmt.Fprintf(&b, " (%s)", describe(d.Right))
		default:
			fmt.Fprintf(&b, " [%s]: %s | %s", strings.Join(d.What, ","), describe(d.Left), describe(d.Right))
		}
		b.WriteByte('\n')
		if d.Lines != nil {
			fmt.Fprintf(&b, "%s  first differing line %d:\n", indent, d.Lines.Line)
			for _, l := range d.Lines.Left {
				fmt.Fprintf(&b, "%s  - %s\n", indent, text.Escape(l))
			}
			for _, l := range d.Lines.Right {
				fmt.Fprintf(&b, "%s  + %s\n", indent, text.Escape(l))
			}
		}
	}
	if r.Omitted > 0 {
		fmt.Fprintf(&b, "%s… and %d more differences\n", indent, r.Omitted)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func describe(e *Entry) string {
	switch e.Type {
	case "symlink":
		return "symlink → " + text.Escape(e.LinkTarget)
	case "directory":
		return "directory"
	}
	s := fmt.Sprintf("regular %d bytes sha256 %s", e.Size, shortHash(e.SHA256))
	if e.Executable {
		s = "executable" + strings.TrimPrefix(s, "regular")
	}
	return s
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
