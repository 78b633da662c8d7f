package derivation

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/storepath"
)

// ParseError is a malformed or invalid .drv; Offset is the byte where the
// problem was found (for a bad string, where the string starts).
type ParseError struct {
	Offset int
	Msg    string
}

func (e *ParseError) Error() string { return fmt.Sprintf("derivation: offset %d: %s", e.Offset, e.Msg) }

type parser struct {
	s        string // the whole input; unescaped strings are substrings of it
	i        int
	storeDir string // of the first path seen; every other path must agree
}

func (p *parser) fail(off int, format string, args ...any) error {
	return &ParseError{Offset: off, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) found() string {
	if p.i >= len(p.s) {
		return "end of input"
	}
	return fmt.Sprintf("%q", p.s[p.i])
}

func (p *parser) expect(lit string) error {
	if !strings.HasPrefix(p.s[p.i:], lit) {
		if len(lit) == 1 {
			return p.fail(p.i, "expected %q, found %s", lit, p.found())
		}
		return p.fail(p.i, "expected %q", lit)
	}
	p.i += len(lit)
	return nil
}

// special marks the bytes that end str's fast scan: the quote, the escape
// character, and the three control bytes the writer always escapes, which
// must therefore never appear raw.
func special(c byte) bool {
	switch c {
	case '"', '\\', '\n', '\r', '\t':
		return true
	}
	return false
}

// str reads a quoted string. Reader rules are Nix's: \n \r \t map to
// control characters and a backslash before any other byte yields that byte.
// Escapes the writer would not produce (\a, \$, ...) are rejected, because
// printing could not reproduce the input bytes.
func (p *parser) str() (string, int, error) {
	start := p.i
	if p.i >= len(p.s) || p.s[p.i] != '"' {
		return "", start, p.fail(p.i, "expected '\"' starting a string, found %s", p.found())
	}
	p.i++
	j := p.i
	for j < len(p.s) && !special(p.s[j]) {
		j++
	}
	if j < len(p.s) && p.s[j] == '"' {
		v := p.s[p.i:j]
		p.i = j + 1
		return v, start, nil
	}
	var b strings.Builder
	b.Grow(j - p.i + 16)
	b.WriteString(p.s[p.i:j])
	for j < len(p.s) {
		c := p.s[j]
		switch c {
		case '"':
			p.i = j + 1
			return b.String(), start, nil
		case '\\':
			if j+1 >= len(p.s) {
				return "", start, p.fail(j, "unterminated escape at end of input")
			}
			switch e := p.s[j+1]; e {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case '"', '\\':
				b.WriteByte(e)
			default:
				return "", start, p.fail(j, "escape \\%c is not one the writer produces (\\\" \\\\ \\n \\r \\t)", e)
			}
			j += 2
		case '\n', '\r', '\t':
			return "", start, p.fail(j, "raw control byte %#02x in a string (the writer escapes it)", c)
		default:
			b.WriteByte(c)
			j++
		}
	}
	return "", start, p.fail(start, "unterminated string")
}

// list parses "[" item ("," item)* "]".
func (p *parser) list(item func() error) error {
	if err := p.expect("["); err != nil {
		return err
	}
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return nil
	}
	for {
		if err := item(); err != nil {
			return err
		}
		if p.i >= len(p.s) {
			return p.fail(p.i, "expected ',' or ']', found end of input")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return nil
		default:
			return p.fail(p.i, "expected ',' or ']', found %s", p.found())
		}
	}
}

func (p *parser) strList(check func(v string, off int, prev *string) error) ([]string, error) {
	var out []string
	var prev *string
	err := p.list(func() error {
		v, off, err := p.str()
		if err != nil {
			return err
		}
		if check != nil {
			if err := check(v, off, prev); err != nil {
				return err
			}
		}
		out = append(out, v)
		prev = &out[len(out)-1]
		return nil
	})
	return out, err
}

// sorted requires strictly ascending bytewise order: equal neighbours are
// duplicates, smaller ones would be re-sorted by the printer.
func (p *parser) sorted(what, v string, off int, prev *string) error {
	if prev == nil {
		return nil
	}
	switch c := strings.Compare(*prev, v); {
	case c == 0:
		return p.fail(off, "duplicate %s %q", what, text.Truncate(v, 64))
	case c > 0:
		return p.fail(off, "%s %q is out of order after %q (must be sorted bytewise)", what, text.Truncate(v, 64), text.Truncate(*prev, 64))
	}
	return nil
}

// path checks a store path; what and detail name it in errors only, so the
// happy path builds no message strings.
func (p *parser) path(what, detail, v string, off int) error {
	sp, err := storepath.Parse(v)
	if err != nil {
		return p.fail(off, "%s%s: %v", what, detail, err)
	}
	if p.storeDir == "" {
		p.storeDir = sp.StoreDir
	} else if sp.StoreDir != p.storeDir {
		return p.fail(off, "%s%s %q is in store %q, but earlier paths are in %q", what, detail, text.Truncate(v, 64), sp.StoreDir, p.storeDir)
	}
	return nil
}

func (p *parser) outputName(v string, off int) error {
	if err := storepath.ValidateName(v); err != nil {
		return p.fail(off, "output name: %v", err)
	}
	return nil
}

// Parse reads a .drv file. It accepts exactly what Bytes would print.
func Parse(b []byte) (*Derivation, error) {
	if len(b) > MaxSize {
		return nil, &ParseError{Offset: MaxSize, Msg: fmt.Sprintf("derivation is %d bytes, limit %d", len(b), MaxSize)}
	}
	p := &parser{s: string(b)}
	d := &Derivation{}
	if err := p.expect("Derive("); err != nil {
		return nil, err
	}
	if err := p.outputs(d); err != nil {
		return nil, err
	}
	if err := p.expect(","); err != nil {
		return nil, err
	}
	if err := p.inputDrvs(d); err != nil {
		return nil, err
	}
	if err := p.expect(","); err != nil {
		return nil, err
	}
	var err error
	d.InputSrcs, err = p.strList(func(v string, off int, prev *string) error {
		if err := p.path("input source", "", v, off); err != nil {
			return err
		}
		return p.sorted("input source", v, off, prev)
	})
	if err != nil {
		return nil, err
	}
	for _, f := range []*string{&d.System, &d.Builder} {
		if err := p.expect(","); err != nil {
			return nil, err
		}
		if *f, _, err = p.str(); err != nil {
			return nil, err
		}
	}
	if err := p.expect(","); err != nil {
		return nil, err
	}
	if d.Args, err = p.strList(nil); err != nil {
		return nil, err
	}
	if err := p.expect(","); err != nil {
		return nil, err
	}
	if err := p.env(d); err != nil {
		return nil, err
	}
	if err := p.expect(")"); err != nil {
		return nil, err
	}
	if p.i != len(p.s) {
		return nil, p.fail(p.i, "trailing data after the closing ')'")
	}
	return d, nil
}

func (p *parser) outputs(d *Derivation) error {
	listStart := p.i
	fixedAt := -1
	err := p.list(func() error {
		if err := p.expect("("); err != nil {
			return err
		}
		var o Output
		var offs [4]int
		for k, f := range []*string{&o.Name, &o.Path, &o.HashAlgo, &o.Hash} {
			if k > 0 {
				if err := p.expect(","); err != nil {
					return err
				}
			}
			var err error
			if *f, offs[k], err = p.str(); err != nil {
				return err
			}
		}
		if err := p.expect(")"); err != nil {
			return err
		}
		if err := p.outputName(o.Name, offs[0]); err != nil {
			return err
		}
		if n := len(d.Outputs); n > 0 {
			if err := p.sorted("output", o.Name, offs[0], &d.Outputs[n-1].Name); err != nil {
				return err
			}
		}
		if err := p.checkOutput(o, offs); err != nil {
			return err
		}
		if o.IsFixed() {
			fixedAt = offs[3]
		}
		d.Outputs = append(d.Outputs, o)
		return nil
	})
	if err != nil {
		return err
	}
	if len(d.Outputs) == 0 {
		return p.fail(listStart, "derivation has no outputs")
	}
	if fixedAt >= 0 && !d.IsFixedOutput() {
		return p.fail(fixedAt, "a fixed output hash is only valid on a single output named \"out\"")
	}
	return nil
}

func (p *parser) checkOutput(o Output, offs [4]int) error {
	switch {
	case o.Path != "":
		if err := p.path("output path of ", o.Name, o.Path, offs[1]); err != nil {
			return err
		}
	case o.Hash != "" && o.Hash != "impure":
		return p.fail(offs[1], "output %q has a fixed hash but no path", o.Name)
	}
	if o.HashAlgo == "" {
		if o.Hash != "" {
			return p.fail(offs[3], "output %q has a hash but no hash algorithm", o.Name)
		}
		// An empty path here is a deferred output (input-addressed but
		// depending on a CA derivation): allowed.
		return nil
	}
	if o.IsFixed() {
		if _, algo := splitMethod(o.HashAlgo); !knownAlgo(algo) {
			return p.fail(offs[2], "output %q: unknown hash algorithm %q", o.Name, text.Truncate(o.HashAlgo, 64))
		}
		if _, _, err := o.FixedHash(); err != nil {
			return p.fail(offs[3], "%v", err)
		}
		return nil
	}
	// Floating CA or impure: the algorithm must still be one we know.
	if _, algo := splitMethod(o.HashAlgo); !knownAlgo(algo) {
		return p.fail(offs[2], "output %q: unknown hash algorithm %q", o.Name, text.Truncate(o.HashAlgo, 64))
	}
	if o.Path != "" {
		return p.fail(offs[1], "output %q is content-addressed without a hash but has a path", o.Name)
	}
	return nil
}

func knownAlgo(a string) bool {
	switch a {
	case "md5", "sha1", "sha256", "sha512":
		return true
	}
	return false
}

func (p *parser) inputDrvs(d *Derivation) error {
	return p.list(func() error {
		if err := p.expect("("); err != nil {
			return err
		}
		path, off, err := p.str()
		if err != nil {
			return err
		}
		if err := p.path("input derivation", "", path, off); err != nil {
			return err
		}
		if !strings.HasSuffix(path, ".drv") {
			return p.fail(off, "input derivation %q does not end in .drv", text.Truncate(path, 64))
		}
		if n := len(d.InputDrvs); n > 0 {
			if err := p.sorted("input derivation", path, off, &d.InputDrvs[n-1].Path); err != nil {
				return err
			}
		}
		if err := p.expect(","); err != nil {
			return err
		}
		outs, err := p.strList(func(v string, off int, prev *string) error {
			if err := p.outputName(v, off); err != nil {
				return err
			}
			return p.sorted("input derivation output", v, off, prev)
		})
		if err != nil {
			return err
		}
		if err := p.expect(")"); err != nil {
			return err
		}
		d.InputDrvs = append(d.InputDrvs, InputDrv{Path: path, Outputs: outs})
		return nil
	})
}

func (p *parser) env(d *Derivation) error {
	return p.list(func() error {
		if err := p.expect("("); err != nil {
			return err
		}
		k, off, err := p.str()
		if err != nil {
			return err
		}
		if n := len(d.Env); n > 0 {
			if err := p.sorted("env var", k, off, &d.Env[n-1].Key); err != nil {
				return err
			}
		}
		if err := p.expect(","); err != nil {
			return err
		}
		v, _, err := p.str()
		if err != nil {
			return err
		}
		if err := p.expect(")"); err != nil {
			return err
		}
		d.Env = append(d.Env, EnvVar{Key: k, Value: v})
		return nil
	})
}

// maxClosure bounds ReadClosure; the full nixpkgs closure of a large system
// is a few tens of thousands of derivations.
const maxClosure = 1 << 20

// ReadClosure reads drvPath and every input .drv recursively. root is a
// filesystem prefix ("" = the real filesystem; with "/tmp/x",
// /nix/store/a.drv is read from /tmp/x/nix/store/a.drv). The map is keyed by
// store path.
func ReadClosure(root, drvPath string) (map[string]*Derivation, error) {
	out := map[string]*Derivation{}
	queue := []string{drvPath}
	seen := map[string]bool{drvPath: true}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		sp, err := storepath.Parse(p)
		if err != nil {
			return nil, fmt.Errorf("read closure of %s: %w", drvPath, err)
		}
		if !sp.IsDerivation() {
			return nil, fmt.Errorf("read closure of %s: %s is not a .drv path", drvPath, p)
		}
		d, err := ReadStoreFile(root, p)
		if err != nil {
			return nil, fmt.Errorf("read closure of %s: %w", drvPath, err)
		}
		out[p] = d
		for _, in := range d.InputDrvs {
			if !seen[in.Path] {
				if len(seen) >= maxClosure {
					return nil, fmt.Errorf("read closure of %s: more than %d derivations", drvPath, maxClosure)
				}
				seen[in.Path] = true
				queue = append(queue, in.Path)
			}
		}
	}
	return out, nil
}

var errCycle = errors.New("dependency cycle")
