package signing

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
)

// Limits for s-expressions read from files or narinfos. Real ones (keys,
// signatures, ACLs with a few dozen entries) are a few KiB at most.
const (
	MaxSexpSize  = 1 << 20
	MaxSexpDepth = 32
)

// Sexp is a libgcrypt s-expression: either an atom (a byte string) or a list.
type Sexp struct {
	IsList bool
	Atom   []byte
	List   []Sexp
}

// Atom makes an atom node.
func Atom(b []byte) Sexp { return Sexp{Atom: b} }

// Tok makes an atom from a string (a token such as "ecc").
func Tok(s string) Sexp { return Sexp{Atom: []byte(s)} }

// List makes a list node.
func List(items ...Sexp) Sexp { return Sexp{IsList: true, List: items} }

// Head returns the first element of a list if it is an atom, else "".
func (s Sexp) Head() string {
	if !s.IsList || len(s.List) == 0 || s.List[0].IsList {
		return ""
	}
	return string(s.List[0].Atom)
}

// Child returns the first direct sub-list whose head is name.
func (s Sexp) Child(name string) (Sexp, bool) {
	if !s.IsList {
		return Sexp{}, false
	}
	for _, c := range s.List {
		if c.Head() == name {
			return c, true
		}
	}
	return Sexp{}, false
}

// Path follows Child through the given heads, starting below s (whose own
// head is not checked).
func (s Sexp) Path(names ...string) (Sexp, bool) {
	cur := s
	for _, n := range names {
		c, ok := cur.Child(n)
		if !ok {
			return Sexp{}, false
		}
		cur = c
	}
	return cur, true
}

// Value returns the atom following the head of a list such as (q #..#).
func (s Sexp) Value() ([]byte, bool) {
	if !s.IsList || len(s.List) != 2 || s.List[1].IsList {
		return nil, false
	}
	return s.List[1].Atom, true
}

// Equal compares structure and bytes.
func (s Sexp) Equal(o Sexp) bool {
	if s.IsList != o.IsList {
		return false
	}
	if !s.IsList {
		return bytes.Equal(s.Atom, o.Atom)
	}
	if len(s.List) != len(o.List) {
		return false
	}
	for i := range s.List {
		if !s.List[i].Equal(o.List[i]) {
			return false
		}
	}
	return true
}

// ParseSexp reads exactly one s-expression in libgcrypt's canonical or
// advanced syntax (tokens, "strings", #hex#, |base64|, n:raw) followed only
// by whitespace. Display hints are rejected: nothing Guix writes uses them.
func ParseSexp(b []byte) (Sexp, error) {
	if len(b) > MaxSexpSize {
		return Sexp{}, fmt.Errorf("parse s-expression: %d bytes exceeds limit %d", len(b), MaxSexpSize)
	}
	p := sexpParser{b: b}
	p.skipSpace()
	if p.i >= len(b) {
		return Sexp{}, fmt.Errorf("parse s-expression: empty input")
	}
	if b[p.i] != '(' {
		return Sexp{}, p.errf("expected '('")
	}
	s, err := p.list(0)
	if err != nil {
		return Sexp{}, err
	}
	p.skipSpace()
	if p.i != len(b) {
		return Sexp{}, p.errf("trailing data after s-expression")
	}
	return s, nil
}

type sexpParser struct {
	b []byte
	i int
}

func (p *sexpParser) errf(format string, args ...any) error {
	return fmt.Errorf("parse s-expression at offset %d: %s", p.i, fmt.Sprintf(format, args...))
}

func isSexpSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isTokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '/' || c == '_' || c == ':' || c == '*' || c == '+' || c == '='
}

func (p *sexpParser) skipSpace() {
	for p.i < len(p.b) && isSexpSpace(p.b[p.i]) {
		p.i++
	}
}

// list parses from an opening parenthesis to its match.
func (p *sexpParser) list(depth int) (Sexp, error) {
	if depth >= MaxSexpDepth {
		return Sexp{}, p.errf("nesting deeper than %d", MaxSexpDepth)
	}
	p.i++ // '('
	s := Sexp{IsList: true}
	for {
		p.skipSpace()
		if p.i >= len(p.b) {
			return Sexp{}, p.errf("unterminated list")
		}
		switch c := p.b[p.i]; {
		case c == ')':
			p.i++
			return s, nil
		case c == '(':
			sub, err := p.list(depth + 1)
			if err != nil {
				return Sexp{}, err
			}
			s.List = append(s.List, sub)
		default:
			a, err := p.atom()
			if err != nil {
				return Sexp{}, err
			}
			s.List = append(s.List, Sexp{Atom: a})
		}
	}
}

func (p *sexpParser) atom() ([]byte, error) {
	c := p.b[p.i]
	switch {
	case c >= '0' && c <= '9':
		start := p.i
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
		}
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, p.errf("length prefix not followed by ':'")
		}
		n, err := strconv.Atoi(string(p.b[start:p.i]))
		if err != nil || n > len(p.b)-p.i-1 {
			return nil, p.errf("raw atom length %q exceeds input", p.b[start:p.i])
		}
		p.i++
		a := append([]byte{}, p.b[p.i:p.i+n]...)
		p.i += n
		return a, nil
	case isTokenChar(c):
		start := p.i
		for p.i < len(p.b) && isTokenChar(p.b[p.i]) {
			p.i++
		}
		return append([]byte{}, p.b[start:p.i]...), nil
	case c == '#':
		return p.delimited('#', "hex", func(body []byte) ([]byte, error) {
			var clean []byte
			for _, ch := range body {
				if !isSexpSpace(ch) {
					clean = append(clean, ch)
				}
			}
			return hex.DecodeString(string(clean))
		})
	case c == '|':
		return p.delimited('|', "base64", func(body []byte) ([]byte, error) {
			return base64.StdEncoding.DecodeString(string(body))
		})
	case c == '"':
		return p.quoted()
	case c == '[':
		return nil, p.errf("display hints are not supported")
	default:
		return nil, p.errf("unexpected byte %q", c)
	}
}

func (p *sexpParser) delimited(end byte, what string, decode func([]byte) ([]byte, error)) ([]byte, error) {
	start := p.i
	j := bytes.IndexByte(p.b[p.i+1:], end)
	if j < 0 {
		return nil, p.errf("unterminated %s atom", what)
	}
	body := p.b[p.i+1 : p.i+1+j]
	a, err := decode(body)
	if err != nil {
		p.i = start
		return nil, fmt.Errorf("parse s-expression at offset %d: bad %s atom: %w", start, what, err)
	}
	p.i += j + 2
	return a, nil
}

func (p *sexpParser) quoted() ([]byte, error) {
	start := p.i
	p.i++
	var out []byte
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch c {
		case '"':
			p.i++
			if out == nil {
				out = []byte{}
			}
			return out, nil
		case '\\':
			if p.i+1 >= len(p.b) {
				return nil, p.errf("unterminated escape")
			}
			e := p.b[p.i+1]
			p.i += 2
			switch e {
			case 'b':
				out = append(out, '\b')
			case 't':
				out = append(out, '\t')
			case 'v':
				out = append(out, '\v')
			case 'n':
				out = append(out, '\n')
			case 'f':
				out = append(out, '\f')
			case 'r':
				out = append(out, '\r')
			case '"', '\'', '\\':
				out = append(out, e)
			case '\n': // line continuation
				if p.i < len(p.b) && p.b[p.i] == '\r' {
					p.i++
				}
			case '\r':
				if p.i < len(p.b) && p.b[p.i] == '\n' {
					p.i++
				}
			case 'x':
				if p.i+2 > len(p.b) {
					return nil, p.errf("short \\x escape")
				}
				v, err := strconv.ParseUint(string(p.b[p.i:p.i+2]), 16, 8)
				if err != nil {
					return nil, p.errf("bad \\x escape")
				}
				out = append(out, byte(v))
				p.i += 2
			case '0', '1', '2', '3':
				if p.i+2 > len(p.b) {
					return nil, p.errf("short octal escape")
				}
				v, err := strconv.ParseUint(string(p.b[p.i-1:p.i+2]), 8, 8)
				if err != nil {
					return nil, p.errf("bad octal escape")
				}
				out = append(out, byte(v))
				p.i += 2
			default:
				return nil, p.errf("unknown escape \\%c", e)
			}
		default:
			out = append(out, c)
			p.i++
		}
	}
	p.i = start
	return nil, p.errf("unterminated string")
}

// Advanced renders s the way libgcrypt's gcry_sexp_sprint does in
// GCRYSEXP_FMT_ADVANCED, which is what Guix writes into key files, ACLs and
// narinfo signatures. Matching it byte for byte keeps our files diffable
// against Guix's own.
func (s Sexp) Advanced() []byte {
	w := advWriter{}
	w.node(s, false)
	return w.out
}

type advWriter struct {
	out       []byte
	indent    int
	lastClose bool // a ')' just ended, and its newline + indentation is written
	started   bool
}

func (w *advWriter) node(s Sexp, lastInList bool) {
	if s.IsList {
		if w.started && !w.lastClose {
			w.out = append(w.out, '\n')
			w.out = append(w.out, bytes.Repeat([]byte{' '}, w.indent)...)
		}
		w.started = true
		w.out = append(w.out, '(')
		w.lastClose = false
		w.indent++
		for i, c := range s.List {
			w.node(c, i == len(s.List)-1)
		}
		w.indent--
		w.out = append(w.out, ')', '\n')
		w.out = append(w.out, bytes.Repeat([]byte{' '}, w.indent)...)
		w.lastClose = true
		return
	}
	w.started = true
	w.out = appendAdvancedAtom(w.out, s.Atom)
	if !lastInList {
		w.out = append(w.out, ' ')
	}
	w.lastClose = false
}

// appendAdvancedAtom picks libgcrypt's encoding: a bare token when every
// byte is a token character and it does not start with a digit, a quoted
// string for printable text, hex otherwise.
func appendAdvancedAtom(out, a []byte) []byte {
	if len(a) == 0 {
		return append(out, '"', '"')
	}
	printable, token := true, a[0] < '0' || a[0] > '9'
	for _, c := range a {
		if !isTokenChar(c) {
			token = false
		}
		if c >= 0x7f || c < 0x20 && !bytes.ContainsRune([]byte("\b\t\v\n\f\r"), rune(c)) {
			printable = false
		}
	}
	switch {
	case token:
		return append(out, a...)
	case printable:
		out = append(out, '"')
		for _, c := range a {
			switch c {
			case '\b':
				out = append(out, '\\', 'b')
			case '\t':
				out = append(out, '\\', 't')
			case '\v':
				out = append(out, '\\', 'v')
			case '\n':
				out = append(out, '\\', 'n')
			case '\f':
				out = append(out, '\\', 'f')
			case '\r':
				out = append(out, '\\', 'r')
			case '"', '\'', '\\':
				out = append(out, '\\', c)
			default:
				out = append(out, c)
			}
		}
		return append(out, '"')
	default:
		out = append(out, '#')
		out = append(out, bytes.ToUpper([]byte(hex.EncodeToString(a)))...)
		return append(out, '#')
	}
}

// Canonical renders the canonical (length-prefixed) form.
func (s Sexp) Canonical() []byte {
	return appendCanonical(nil, s)
}

func appendCanonical(out []byte, s Sexp) []byte {
	if !s.IsList {
		out = strconv.AppendInt(out, int64(len(s.Atom)), 10)
		out = append(out, ':')
		return append(out, s.Atom...)
	}
	out = append(out, '(')
	for _, c := range s.List {
		out = appendCanonical(out, c)
	}
	return append(out, ')')
}
