package derivation

import (
	"path"
	"slices"
	"strings"
	"unicode/utf8"
)

// ShowJSON renders derivations keyed by their .drv store path the way Nix
// 2.8's `nix show-derivation` does, byte for byte for valid UTF-8: same key
// order, two-space indent, entries sorted by basename (Nix orders StorePath
// by basename), trailing newline.
func ShowJSON(drvs map[string]*Derivation) []byte {
	keys := make([]string, 0, len(drvs))
	for k := range drvs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if c := strings.Compare(path.Base(a), path.Base(b)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	b := []byte("{")
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n  "...)
		b = appendJSONStr(b, k)
		b = append(b, ": "...)
		b = drvs[k].appendShowJSON(b, "  ")
	}
	if len(keys) > 0 {
		b = append(b, '\n')
	}
	return append(b, "}\n"...)
}

func (d *Derivation) appendShowJSON(b []byte, ind string) []byte {
	in1, in2, in3 := ind+"  ", ind+"    ", ind+"      "
	b = append(b, "{\n"+in1+`"outputs": `...)
	b = jsonObject(b, in1, len(d.Outputs), func(b []byte, i int) []byte {
		o := d.Outputs[i]
		b = appendJSONStr(b, o.Name)
		b = append(b, ": {"...)
		// Nix omits what an output does not have: no path for floating CA,
		// no hash for floating CA.
		first := true
		field := func(b []byte, k, v string) []byte {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = append(b, "\n"+in3+`"`+k+`": `...)
			return appendJSONStr(b, v)
		}
		if o.Path != "" {
			b = field(b, "path", o.Path)
		}
		if o.HashAlgo != "" {
			b = field(b, "hashAlgo", o.HashAlgo)
			if o.Hash != "" {
				b = field(b, "hash", o.Hash)
			}
		}
		if first {
			return append(b, '}')
		}
		return append(b, "\n"+in2+"}"...)
	})
	b = append(b, ",\n"+in1+`"inputSrcs": `...)
	b = jsonArray(b, in1, d.InputSrcs)
	b = append(b, ",\n"+in1+`"inputDrvs": `...)
	b = jsonObject(b, in1, len(d.InputDrvs), func(b []byte, i int) []byte {
		b = appendJSONStr(b, d.InputDrvs[i].Path)
		b = append(b, ": "...)
		return jsonArray(b, in2, d.InputDrvs[i].Outputs)
	})
	b = append(b, ",\n"+in1+`"system": `...)
	b = appendJSONStr(b, d.System)
	b = append(b, ",\n"+in1+`"builder": `...)
	b = appendJSONStr(b, d.Builder)
	b = append(b, ",\n"+in1+`"args": `...)
	b = jsonArray(b, in1, d.Args)
	b = append(b, ",\n"+in1+`"env": `...)
	b = jsonObject(b, in1, len(d.Env), func(b []byte, i int) []byte {
		b = appendJSONStr(b, d.Env[i].Key)
		b = append(b, ": "...)
		return appendJSONStr(b, d.Env[i].Value)
	})
	return append(b, "\n"+ind+"}"...)
}

// jsonObject writes n members produced by member, or "{}" when empty.
func jsonObject(b []byte, ind string, n int, member func(b []byte, i int) []byte) []byte {
	if n == 0 {
		return append(b, "{}"...)
	}
	b = append(b, '{')
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n  "+ind...)
		b = member(b, i)
	}
	return append(b, "\n"+ind+"}"...)
}

func jsonArray(b []byte, ind string, ss []string) []byte {
	if len(ss) == 0 {
		return append(b, "[]"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n  "+ind...)
		b = appendJSONStr(b, s)
	}
	return append(b, "\n"+ind+"]"...)
}

// appendJSONStr escapes like Nix's JSON writer (\" \\ \n \r \t, other
// control bytes as \u00xx, everything else raw). Nix also copies invalid
// UTF-8 through, producing invalid JSON; we write U+FFFD instead so the
// output always parses.
func appendJSONStr(b []byte, s string) []byte {
	const hexdig = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '\r':
			b = append(b, `\r`...)
		case c == '\t':
			b = append(b, `\t`...)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexdig[c>>4], hexdig[c&0xf])
		case c < utf8.RuneSelf:
			b = append(b, c)
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				b = append(b, "\uFFFD"...)
			} else {
				b = append(b, s[i:i+n]...)
			}
			i += n
			continue
		}
		i++
	}
	return append(b, '"')
}
