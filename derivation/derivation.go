// Package derivation reads and writes Nix/Guix .drv files (the ATerm
// "Derive(...)" format, docs/formats.md §3) and computes hashDerivationModulo and
// output paths. Parsing is strict: anything that would not print back to the
// same bytes is rejected with an error naming the byte offset, so a parsed
// Derivation can be hashed without surprises.
package derivation

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/storepath"
)

// MaxSize bounds a .drv file. Real ones are kilobytes; the largest in
// nixpkgs (big structured attrs) stay well under a megabyte.
const MaxSize = 64 << 20

// Output is one (name, path, hashAlgo, hash) tuple. Path is empty for
// floating content-addressed and deferred outputs.
type Output struct{ Name, Path, HashAlgo, Hash string }

// IsFixed reports whether the output has a fixed content hash (a
// fixed-output derivation). "impure" is a marker, not a hash.
func (o Output) IsFixed() bool { return o.HashAlgo != "" && o.Hash != "" && o.Hash != "impure" }

// FixedHash decodes a fixed output's hashAlgo ("[r:|text:]algo") and hex
// hash. recursive means the hash is over the NAR serialisation.
func (o Output) FixedHash() (method string, h nixhash.Hash, err error) {
	method, algo := splitMethod(o.HashAlgo)
	a := nixhash.Algo(algo)
	if a.Size() == 0 {
		return "", nixhash.Hash{}, fmt.Errorf("output %q: unknown hash algorithm %q", o.Name, o.HashAlgo)
	}
	if len(o.Hash) != 2*a.Size() {
		return "", nixhash.Hash{}, fmt.Errorf("output %q: %s hash %q has %d hex digits, want %d", o.Name, algo, text.Truncate(o.Hash, 64), len(o.Hash), 2*a.Size())
	}
	d, err := hex.DecodeString(o.Hash)
	if err != nil || hex.EncodeToString(d) != o.Hash {
		return "", nixhash.Hash{}, fmt.Errorf("output %q: hash %q is not lowercase hex", o.Name, text.Truncate(o.Hash, 64))
	}
	return method, nixhash.Hash{Algo: a, Digest: d}, nil
}

// splitMethod separates the ingestion method prefix ("r:" for NAR, "text:"
// for text-hashed CA) from the algorithm name.
func splitMethod(hashAlgo string) (method, algo string) {
	for _, m := range []string{"r:", "text:"} {
		if strings.HasPrefix(hashAlgo, m) {
			return m, hashAlgo[len(m):]
		}
	}
	return "", hashAlgo
}

// InputDrv is an input derivation and the outputs of it that are used.
type InputDrv struct {
	Path    string
	Outputs []string
}

// EnvVar is one environment variable passed to the builder.
type EnvVar struct{ Key, Value string }

// Derivation is a parsed .drv. Lists are kept in file order, which for a
// parsed value is the canonical sorted order.
type Derivation struct {
	Outputs   []Output
	InputDrvs []InputDrv
	InputSrcs []string
	System    string
	Builder   string
	Args      []string
	Env       []EnvVar
}

// Getenv returns the value of env var key.
func (d *Derivation) Getenv(key string) (string, bool) {
	if slices.IsSortedFunc(d.Env, cmpEnv) {
		i, ok := slices.BinarySearchFunc(d.Env, key, func(e EnvVar, k string) int { return strings.Compare(e.Key, k) })
		if ok {
			return d.Env[i].Value, true
		}
		return "", false
	}
	for _, e := range d.Env {
		if e.Key == key {
			return e.Value, true
		}
	}
	return "", false
}

// Output returns the output called name.
func (d *Derivation) Output(name string) (Output, bool) {
	for _, o := range d.Outputs {
		if o.Name == name {
			return o, true
		}
	}
	return Output{}, false
}

// IsFixedOutput reports whether d is a fixed-output derivation: a single
// output "out" with a content hash. Such derivations may use the network and
// their hashDerivationModulo ignores everything but the output.
func (d *Derivation) IsFixedOutput() bool {
	return len(d.Outputs) == 1 && d.Outputs[0].Name == "out" && d.Outputs[0].IsFixed()
}

// RequiredSystemFeatures lists the features a builder must have, from the
// space-separated env var or, with structured attrs, from the __json list.
func (d *Derivation) RequiredSystemFeatures() []string {
	if js, ok := d.Getenv("__json"); ok {
		var attrs struct {
			Features []string `json:"requiredSystemFeatures"`
		}
		if err := json.Unmarshal([]byte(js), &attrs); err != nil {
			// A malformed __json would also fail the real builder; treat
			// it as asking for nothing rather than failing scheduling here.
			return nil
		}
		return attrs.Features
	}
	v, _ := d.Getenv("requiredSystemFeatures")
	// Nix tokenizes on these four bytes only, not on Unicode spaces.
	return strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' })
}

// StoreDir is the store directory of the derivation's paths ("/nix/store",
// "/gnu/store"), or "" when it names no paths at all.
func (d *Derivation) StoreDir() string {
	for _, p := range d.allPaths() {
		if sp, err := storepath.Parse(p); err == nil {
			return sp.StoreDir
		}
	}
	return ""
}

func (d *Derivation) allPaths() []string {
	var ps []string
	for _, o := range d.Outputs {
		if o.Path != "" {
			ps = append(ps, o.Path)
		}
	}
	for _, in := range d.InputDrvs {
		ps = append(ps, in.Path)
	}
	return append(ps, d.InputSrcs...)
}

// Name is the derivation's name: taken from the "out" output path (or the
// first output that has a path, minus its "-output" suffix), else from the
// env "name" (Guix puts no name in env; structured attrs put it in __json).
func (d *Derivation) Name() string {
	if o, ok := d.Output("out"); ok && o.Path != "" {
		if sp, err := storepath.Parse(o.Path); err == nil {
			return sp.Name
		}
	}
	for _, o := range d.Outputs {
		if o.Path == "" {
			continue
		}
		if sp, err := storepath.Parse(o.Path); err == nil {
			if n, ok := strings.CutSuffix(sp.Name, "-"+o.Name); ok && n != "" {
				return n
			}
		}
	}
	if n, ok := d.Getenv("name"); ok {
		return n
	}
	if js, ok := d.Getenv("__json"); ok {
		var attrs struct {
			Name string `json:"name"`
		}
		if json.Unmarshal([]byte(js), &attrs) == nil {
			return attrs.Name
		}
	}
	return ""
}

// References are the store paths a .drv file refers to: inputSrcs and
// inputDrvs, sorted. They are the references of its text path.
func (d *Derivation) References() []string {
	refs := slices.Clone(d.InputSrcs)
	for _, in := range d.InputDrvs {
		refs = append(refs, in.Path)
	}
	slices.Sort(refs)
	return slices.Compact(refs)
}

// DrvPath computes the store path of the .drv file itself: a text path of
// Bytes() with References().
func (d *Derivation) DrvPath() (string, error) {
	dir, name := d.StoreDir(), d.Name()
	if dir == "" {
		return "", fmt.Errorf("derivation path: no store paths to take the store directory from")
	}
	if err := storepath.ValidateName(name + ".drv"); err != nil {
		return "", fmt.Errorf("derivation path: %w", err)
	}
	return storepath.MakeTextPath(dir, name+".drv", d.Bytes(), d.References()), nil
}

func cmpOutput(a, b Output) int     { return strings.Compare(a.Name, b.Name) }
func cmpInputDrv(a, b InputDrv) int { return strings.Compare(a.Path, b.Path) }
func cmpEnv(a, b EnvVar) int        { return strings.Compare(a.Key, b.Key) }
