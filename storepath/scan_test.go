package storepath

import (
	"slices"
	"strings"
	"testing"
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
