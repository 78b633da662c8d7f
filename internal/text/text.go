// Package text holds the string helpers every layer shares.
package text

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Truncate returns s if it is at most n bytes long, and otherwise its
// first n bytes or fewer followed by "…". The cut never splits a UTF-8
// sequence, so a valid string stays valid; bytes that are not UTF-8 are
// cut as they are. It bounds what hostile input puts into errors and logs.
func Truncate(s string, n int) string {
	if n < 0 {
		n = 0
	}
	if len(s) <= n {
		return s
	}
	// s[n] is the first byte dropped. If it continues a valid sequence
	// that starts before n, cut before that sequence instead.
	cut := n
	if !utf8.RuneStart(s[n]) {
		j := n
		for j > 0 && n-j < utf8.UTFMax-1 && !utf8.RuneStart(s[j]) {
			j--
		}
		if r, size := utf8.DecodeRuneInString(s[j:]); (r != utf8.RuneError || size > 1) && j+size > n {
			cut = j
		}
	}
	return s[:cut] + "…"
}

// Escape makes s safe to print on a terminal: control characters (C0
// including newline, CR, tab and ESC, DEL, and C1) and bytes that are not
// UTF-8 become \n, \r, \t or \xNN / \u00NN escapes, so text that came from
// an agent or a user can neither move the cursor nor fake lines or
// columns. Every text printer of the SSH commands passes such values
// through it; JSON output is left exact.
func Escape(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r < 0xa0:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// HasControl reports whether s holds a character Escape would escape.
func HasControl(s string) bool { return needsEscape(s) }

func needsEscape(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size <= 1) || (r >= 0x80 && r < 0xa0) {
			return true
		}
		i += size
	}
	return false
}
