// Package text holds the string helpers every layer shares.
package text

import "unicode/utf8"

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
