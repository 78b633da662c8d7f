package derivation

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzParse checks that Parse never panics and that whatever it accepts
// prints back to exactly the input (the parser is strict) and re-parses to
// the same structure. Seeds: every vector plus testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, v := range vectors(f) {
		f.Add(v.raw)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := Parse(in)
		if err != nil {
			if d != nil {
				t.Fatal("non-nil derivation with an error")
			}
			return
		}
		out := d.Bytes()
		if !bytes.Equal(out, in) {
			t.Fatalf("accepted input does not round-trip:\n in %q\nout %q", in, out)
		}
		d2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of printed form failed: %v", err)
		}
		if !reflect.DeepEqual(d, d2) {
			t.Fatalf("re-parse differs:\n%+v\n%+v", d, d2)
		}
		if !bytes.Equal(d2.Bytes(), out) {
			t.Fatal("printing is not stable")
		}
		// The derived values must not panic on any accepted input.
		fake := func(string) ([]byte, error) { return make([]byte, 32), nil }
		_, _ = HashModulo(d, true, fake)
		_, _ = d.OutputPaths(fake)
		_, _ = d.DrvPath()
		_ = d.RequiredSystemFeatures()
	})
}
