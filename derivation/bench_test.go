package derivation

import (
	"testing"
)

// BenchmarkParse parses every vector once per iteration and reports files/s
// and MB/s (bench/drv.sh prints these next to nix show-derivation).
func BenchmarkParse(b *testing.B) {
	vs := vectors(b)
	var total int64
	for _, v := range vs {
		total += int64(len(v.raw))
	}
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		for _, v := range vs {
			if _, err := Parse(v.raw); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*len(vs))/b.Elapsed().Seconds(), "files/s")
}

// BenchmarkParseVerify adds what the coordinator does per submitted .drv:
// print, compute its own path and recompute its output paths.
func BenchmarkParseVerify(b *testing.B) {
	vs := vectors(b)
	c := closure(b)
	var total int64
	for _, v := range vs {
		total += int64(len(v.raw))
	}
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		res := Resolver(c)
		for _, v := range vs {
			d, err := Parse(v.raw)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := d.DrvPath(); err != nil {
				b.Fatal(err)
			}
			if err := d.VerifyOutputs(res); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*len(vs))/b.Elapsed().Seconds(), "files/s")
}
