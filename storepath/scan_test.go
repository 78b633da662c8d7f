package storepath

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/nixhash"
)

func TestScanner(t *testing.T) {
	a := "ahmsbzv5qw2i380wwcpv3bf6lm3ijmfx"
	b := "c1vkj2mccblk74zz1fzah0m1rjmc47nw"
	cands := []string{"/nix/store/" + a + "-simple", "/nix/store/" + b + "-multi", "/nix/store/not-a-path"}
	tests := []struct {
		name  string
		data  string
		chunk int
		want  []string
	}{
		{"none", "nothing here", 4, nil},
		{"whole path", "x /nix/store/" + a + "-simple/bin y", 1000, cands[:1]},
		{"bare hash, split across writes", "..." + b + "...", 5, cands[1:2]},
		{"both, byte by byte", a + b, 1, cands[:2]},
		{"hash inside longer base32 run", "zz" + a + "zz", 3, cands[:1]},
		{"one char short", a[:31] + "-", 2, nil},
		{"hash at end of stream", strings.Repeat("-", 40) + b, 31, cands[1:2]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewScanner(cands)
			d := []byte(tt.data)
			for len(d) > 0 {
				n := min(len(d), tt.chunk)
				s.Write(d[:n])
				d = d[n:]
			}
			if got := s.Found(); !slices.Equal(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Fatalf("found %v, want %v", got, tt.want)
			}
		})
	}
}

// TestScannerMatchesNaive: on random text over a small alphabet (base32
// runs broken by other bytes) fed in random chunks, the scanner finds
// exactly the candidates a naive search of the whole stream finds.
func TestScannerMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	const alpha = "0123456789abcdfg-/"
	for round := range 200 {
		var cands []string
		data := make([]byte, 2000+rng.IntN(2000))
		for i := range data {
			data[i] = alpha[rng.IntN(len(alpha))]
		}
		for range 1 + rng.IntN(5) {
			var h [HashLen]byte
			for i := range h {
				h[i] = nixhash.Alphabet[rng.IntN(16)]
			}
			cands = append(cands, "/nix/store/"+string(h[:])+"-c")
			if rng.IntN(2) == 0 { // planted, maybe across a chunk boundary
				copy(data[rng.IntN(len(data)-HashLen):], h[:])
			}
		}
		var want []string
		for _, c := range cands {
			if strings.Contains(string(data), c[len("/nix/store/"):len("/nix/store/")+HashLen]) {
				want = append(want, c)
			}
		}
		slices.Sort(want)
		want = slices.Compact(want)
		s := NewScanner(cands)
		for d := data; len(d) > 0; {
			n := min(len(d), 1+rng.IntN(70))
			s.Write(d[:n])
			d = d[n:]
		}
		if got := s.Found(); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("round %d: found %v, want %v", round, got, want)
		}
	}
}
