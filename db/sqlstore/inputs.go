package sqlstore

import (
	"database/sql"
	"fmt"
	"strings"
)

// The input derivations of a build are one column, builds.input_drvs
// (migration 0004): the paths joined by newlines, each in the build's own
// store directory kept as its base name (they nearly always are, and the
// directory is most of a path's length). '' is no inputs, NULL not
// recorded.

// EncodeInputs is the stored form of a build's input derivations; invalid
// (NULL) for nil.
func EncodeInputs(derivation string, inputs []string) sql.NullString {
	if inputs == nil {
		return sql.NullString{}
	}
	dir := storeDirOf(derivation)
	n := 0
	for _, in := range inputs {
		n += len(in) + 1
	}
	var b strings.Builder
	b.Grow(n)
	for i, in := range inputs {
		if i > 0 {
			b.WriteByte('\n')
		}
		if base, ok := strings.CutPrefix(in, dir); ok && dir != "" && base != "" && !strings.Contains(base, "/") {
			in = base
		}
		b.WriteString(in)
	}
	return sql.NullString{String: b.String(), Valid: true}
}

// storeDirOf is the directory of a path with its trailing slash ("" if the
// path has none).
func storeDirOf(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return ""
	}
	return p[:i+1]
}

func validateInputs(id string, inputs []string) error {
	for i, in := range inputs {
		if !strings.HasPrefix(in, "/") || strings.Contains(in, "\n") {
			return fmt.Errorf("build %s: input derivation %d (%q): not an absolute path, or contains a newline", id, i, in)
		}
	}
	return nil
}

// interner hands out one string per distinct path, so the input paths of a
// page share their strings with each other and with the page's
// derivations instead of each build holding its own copy.
type interner struct {
	m   map[string]string
	buf []byte
}

func newInterner(n int) *interner { return &interner{m: make(map[string]string, n)} }

// add records s (already its own allocation) as the string for its value.
func (t *interner) add(s string) string {
	if v, ok := t.m[s]; ok {
		return v
	}
	t.m[s] = s
	return s
}

// decode is the inverse of EncodeInputs for a build of derivation; the
// paths come from t. The stored text is only read, so the result does not
// pin it.
func (t *interner) decode(derivation string, v sql.NullString) []string {
	if !v.Valid {
		return nil
	}
	if v.String == "" {
		return []string{}
	}
	dir := storeDirOf(derivation)
	out := make([]string, 0, strings.Count(v.String, "\n")+1)
	for rest := v.String; ; {
		entry, tail, more := strings.Cut(rest, "\n")
		t.buf = t.buf[:0]
		if !strings.HasPrefix(entry, "/") {
			t.buf = append(t.buf, dir...)
		}
		t.buf = append(t.buf, entry...)
		// Indexing with string(buf) does not allocate; only a new path is
		// copied out.
		s, ok := t.m[string(t.buf)]
		if !ok {
			s = string(t.buf)
			t.m[s] = s
		}
		out = append(out, s)
		if !more {
			return out
		}
		rest = tail
	}
}
