package derivation

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/gbc-farm/gbc/storepath"
)

// Bytes prints d in ATerm form, sorting outputs, input derivations (and
// their output names), input sources and env as both Nix and Guix do. args
// keep their order. For a parsed Derivation this reproduces the input bytes.
func (d *Derivation) Bytes() []byte {
	return d.appendATerm(make([]byte, 0, d.sizeHint()), maskNone)
}

type mask int

const (
	maskNone mask = iota
	// maskOutputs blanks output paths and the env vars named after outputs,
	// as for computing a derivation's own input-addressed output paths.
	maskOutputs
)

func (d *Derivation) sizeHint() int {
	n := 64 + len(d.System) + len(d.Builder)
	for _, o := range d.Outputs {
		n += len(o.Name) + len(o.Path) + len(o.HashAlgo) + len(o.Hash) + 12
	}
	for _, in := range d.InputDrvs {
		n += len(in.Path) + 8
		for _, o := range in.Outputs {
			n += len(o) + 3
		}
	}
	for _, s := range d.InputSrcs {
		n += len(s) + 3
	}
	for _, s := range d.Args {
		n += len(s) + 3
	}
	for _, e := range d.Env {
		n += len(e.Key) + len(e.Value) + 8
	}
	return n + n/16
}

func (d *Derivation) appendATerm(b []byte, m mask) []byte {
	outputs := sortedCopy(d.Outputs, cmpOutput)
	inputDrvs := sortedCopy(d.InputDrvs, cmpInputDrv)
	srcs := sortedCopy(d.InputSrcs, strings.Compare)
	env := sortedCopy(d.Env, cmpEnv)

	b = append(b, "Derive(["...)
	for i, o := range outputs {
		if i > 0 {
			b = append(b, ',')
		}
		path := o.Path
		if m == maskOutputs {
			path = ""
		}
		b = append(b, '(')
		b = appendStr(b, o.Name)
		b = append(b, ',')
		b = appendStr(b, path)
		b = append(b, ',')
		b = appendStr(b, o.HashAlgo)
		b = append(b, ',')
		b = appendStr(b, o.Hash)
		b = append(b, ')')
	}
	b = append(b, "],["...)
	for i, in := range inputDrvs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '(')
		b = appendStr(b, in.Path)
		b = append(b, ",["...)
		for j, o := range sortedCopy(in.Outputs, strings.Compare) {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendStr(b, o)
		}
		b = append(b, "])"...)
	}
	b = append(b, "],"...)
	b = appendStrList(b, srcs)
	b = append(b, ',')
	b = appendStr(b, d.System)
	b = append(b, ',')
	b = appendStr(b, d.Builder)
	b = append(b, ',')
	b = appendStrList(b, d.Args)
	b = append(b, ",["...)
	for i, e := range env {
		if i > 0 {
			b = append(b, ',')
		}
		v := e.Value
		if m == maskOutputs && slices.ContainsFunc(outputs, func(o Output) bool { return o.Name == e.Key }) {
			v = ""
		}
		b = append(b, '(')
		b = appendStr(b, e.Key)
		b = append(b, ',')
		b = appendStr(b, v)
		b = append(b, ')')
	}
	return append(b, "])"...)
}

// sortedCopy returns s itself when already sorted (the parsed case) so that
// printing does not allocate copies.
func sortedCopy[T any](s []T, cmp func(a, b T) int) []T {
	if slices.IsSortedFunc(s, cmp) {
		return s
	}
	c := slices.Clone(s)
	slices.SortStableFunc(c, cmp)
	return c
}

func appendStrList(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendStr(b, s)
	}
	return append(b, ']')
}

// appendStr quotes s with the writer's five escapes; every other byte,
// including other control characters and non-UTF-8, is written raw.
func appendStr(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch s[i] {
		case '"':
			esc = `\"`
		case '\\':
			esc = `\\`
		case '\n':
			esc = `\n`
		case '\r':
			esc = `\r`
		case '\t':
			esc = `\t`
		default:
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, esc...)
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// HashModulo is Nix's hashDerivationModulo. For a fixed-output derivation it
// is sha256("fixed:out:<hashAlgo>:<hex>:<path>"), so changing how a FOD is
// fetched does not change anything downstream. Otherwise it is sha256 of the
// ATerm with each input .drv path replaced by the hex of that input's
// (unmasked) HashModulo, as returned by inputs; with masked, output paths
// and the env vars named after outputs are blanked (used to compute d's own
// output paths).
func HashModulo(d *Derivation, masked bool, inputs func(drvPath string) ([]byte, error)) ([]byte, error) {
	if d.IsFixedOutput() {
		o := d.Outputs[0]
		sum := sha256.Sum256([]byte("fixed:out:" + o.HashAlgo + ":" + o.Hash + ":" + o.Path))
		return sum[:], nil
	}
	// Nix builds a map from hex to output set with insert_or_assign while
	// walking inputs in path order, so if two inputs share a hash the later
	// path's output names win. Reproduce that, not a merge.
	byHash := make(map[string][]string, len(d.InputDrvs))
	for _, in := range sortedCopy(d.InputDrvs, cmpInputDrv) {
		if inputs == nil {
			return nil, fmt.Errorf("hash derivation modulo: input %s needs a resolver", in.Path)
		}
		h, err := inputs(in.Path)
		if err != nil {
			return nil, fmt.Errorf("hash derivation modulo: input %s: %w", in.Path, err)
		}
		byHash[hex.EncodeToString(h)] = in.Outputs
	}
	repl := *d
	repl.InputDrvs = make([]InputDrv, 0, len(byHash))
	for h, outs := range byHash {
		repl.InputDrvs = append(repl.InputDrvs, InputDrv{Path: h, Outputs: outs})
	}
	slices.SortFunc(repl.InputDrvs, cmpInputDrv)
	m := maskNone
	if masked {
		m = maskOutputs
	}
	sum := sha256.Sum256(repl.appendATerm(make([]byte, 0, d.sizeHint()), m))
	return sum[:], nil
}

// Resolver returns an inputs function for HashModulo that looks derivations
// up in closure (as from ReadClosure) and memoises their unmasked hashes.
// It reports missing inputs and dependency cycles instead of recursing
// forever. The returned function is not safe for concurrent use.
func Resolver(closure map[string]*Derivation) func(drvPath string) ([]byte, error) {
	memo := map[string][]byte{}
	active := map[string]bool{}
	var resolve func(string) ([]byte, error)
	resolve = func(p string) ([]byte, error) {
		if h, ok := memo[p]; ok {
			return h, nil
		}
		d, ok := closure[p]
		if !ok {
			return nil, fmt.Errorf("input derivation %s not in closure", p)
		}
		if active[p] {
			return nil, fmt.Errorf("%s: %w", p, errCycle)
		}
		active[p] = true
		h, err := HashModulo(d, false, resolve)
		delete(active, p)
		if err != nil {
			return nil, err
		}
		memo[p] = h
		return h, nil
	}
	return resolve
}

// OutputPaths computes the path each output should have. Outputs without a
// computable path (floating CA, deferred, impure) map to "".
func (d *Derivation) OutputPaths(inputs func(drvPath string) ([]byte, error)) (map[string]string, error) {
	dir, name := d.StoreDir(), d.Name()
	if dir == "" {
		return nil, fmt.Errorf("output paths: no store directory")
	}
	if err := storepath.ValidateName(name); err != nil {
		return nil, fmt.Errorf("output paths: derivation name: %w", err)
	}
	res := make(map[string]string, len(d.Outputs))
	var masked []byte
	for _, o := range d.Outputs {
		switch {
		case o.IsFixed():
			method, h, err := o.FixedHash()
			if err != nil {
				return nil, fmt.Errorf("output paths: %w", err)
			}
			if method == "text:" {
				return nil, fmt.Errorf("output paths: output %q: text-hashed CA outputs are not supported", o.Name)
			}
			res[o.Name] = storepath.MakeFixedOutputPath(dir, name, method == "r:", h, nil)
		case o.HashAlgo != "" || o.Path == "":
			res[o.Name] = ""
		default:
			if masked == nil {
				var err error
				if masked, err = HashModulo(d, true, inputs); err != nil {
					return nil, fmt.Errorf("output paths: %w", err)
				}
			}
			if err := storepath.ValidateName(storepath.OutputPathName(name, o.Name)); err != nil {
				return nil, fmt.Errorf("output paths: output %q: %w", o.Name, err)
			}
			res[o.Name] = storepath.MakeOutputPath(dir, o.Name, name, masked)
		}
	}
	return res, nil
}

// VerifyOutputs checks that every output's declared path is the one its
// inputs determine, so a forged .drv cannot claim someone else's output.
func (d *Derivation) VerifyOutputs(inputs func(drvPath string) ([]byte, error)) error {
	want, err := d.OutputPaths(inputs)
	if err != nil {
		return err
	}
	for _, o := range d.Outputs {
		if want[o.Name] != o.Path {
			return fmt.Errorf("output %q: declared path %s, computed %s", o.Name, o.Path, want[o.Name])
		}
	}
	return nil
}
