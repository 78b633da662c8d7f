package text

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"", 3, ""},
		{"abc", 3, "abc"},
		{"abcd", 3, "abc…"},
		{"abcd", 0, "…"},
		{"abcd", -1, "…"},
		{"aé", 2, "a…"},                         // é is 2 bytes: not split
		{"aéb", 3, "aé…"},                       // ends exactly after é
		{"a€b", 2, "a…"},                        // € is 3 bytes
		{"a€b", 3, "a…"},                        // cut falls inside €
		{"a€b", 4, "a€…"},                       // ends exactly after €
		{"😀x", 3, "…"},                          // 4-byte rune, cut inside it
		{"\xff\xfe\xfd", 2, "\xff\xfe…"},        // not UTF-8: cut as is
		{"a\x80\x80\x80\x80b", 3, "a\x80\x80…"}, // stray continuation bytes
	} {
		if got := Truncate(tc.s, tc.n); got != tc.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}

// Every cut of a valid string is valid and at most n bytes plus the mark.
func TestTruncateKeepsUTF8Valid(t *testing.T) {
	s := strings.Repeat("aé€😀", 8)
	for n := 0; n <= len(s)+1; n++ {
		got := Truncate(s, n)
		if !utf8.ValidString(got) {
			t.Fatalf("Truncate(%q, %d) = %q is not valid UTF-8", s, n, got)
		}
		body := strings.TrimSuffix(got, "…")
		if len(body) > n || !strings.HasPrefix(s, body) {
			t.Fatalf("Truncate(%q, %d) = %q", s, n, got)
		}
		if got != s && len(body) < n-utf8.UTFMax+1 {
			t.Fatalf("Truncate(%q, %d) = %q cut more than one rune short", s, n, got)
		}
	}
}

func FuzzTruncate(f *testing.F) {
	f.Add("aé€😀", 3)
	f.Fuzz(func(t *testing.T, s string, n int) {
		if n > 1<<20 || n < -1<<20 {
			return
		}
		got := Truncate(s, n)
		if len(s) <= max(n, 0) {
			if got != s {
				t.Fatalf("short string changed: %q", got)
			}
			return
		}
		body, ok := strings.CutSuffix(got, "…")
		if !ok || !strings.HasPrefix(s, body) || len(body) > max(n, 0) {
			t.Fatalf("Truncate(%q, %d) = %q", s, n, got)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("Truncate(%q, %d) = %q broke UTF-8", s, n, got)
		}
	})
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"builder-1":           "builder-1",
		"naïve ✓":             "naïve ✓",
		"a\nb\rc\td":          `a\nb\rc\td`,
		"\x1b[2J\x1b]0;x\x07": `\x1b[2J\x1b]0;x\x07`,
		"del\x7f":             `del\x7f`,
		"c1 \u009b31m":        `c1 \u009b31m`,
		"bad \xff\xfe utf8":   `bad \xff\xfe utf8`,
		"truncated \xe2\x9c":  `truncated \xe2\x9c`,
		"nul\x00":             `nul\x00`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
		if HasControl(in) != (in != want) {
			t.Errorf("HasControl(%q) = %v", in, HasControl(in))
		}
	}
}
